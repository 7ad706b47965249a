// decimal.h: exact decimal comparison and a top-level JSON key lookup, no libc I/O, no floats.
// Owns nothing the host gives; never allocates. Kept apart from the bindings so it reads alone.
#ifndef LARGE_DEPOSITS_DECIMAL_H
#define LARGE_DEPOSITS_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>

// A non-negative decimal as the text gives it: "150.25" -> int "150", frac "25".
typedef struct {
    const char *int_part;
    size_t int_len;
    const char *frac_part;
    size_t frac_len;
} decimal_t;

// Parses `digits[.digits]` (no sign, no exponent) spanning exactly [text, text+len).
bool decimal_parse(const char *text, size_t len, decimal_t *out);

// -1, 0 or 1 as a < b, a == b, a > b, exactly ("1000" == "1000.00").
int decimal_compare(const decimal_t *a, const decimal_t *b);

// Finds the value of the first top-level key of a JSON object equal to `key` ignoring ASCII
// case. A string value is returned without its quotes (escapes are not decoded: a decimal has
// none), a number as written. False if the key is absent, the text is not an object, or the
// value is neither a string nor a number.
bool json_top_level_scalar(const char *json, size_t len, const char *key, size_t key_len,
                           const char **value, size_t *value_len);

#endif
