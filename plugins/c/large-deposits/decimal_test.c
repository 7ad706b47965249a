// decimal_test.c: native checks of decimal.c, run by the test suite
// (tests/e2e/plugin_example_c.rs) or by hand:
//   clang -Wall -Wextra -o /tmp/decimal_test decimal_test.c decimal.c && /tmp/decimal_test
#include <stdio.h>
#include <string.h>

#include "decimal.h"

static int failures = 0;

static void check(bool ok, const char *what) {
    if (!ok) {
        printf("FAILED: %s\n", what);
        failures++;
    }
}

// 99 when either side is not a decimal.
static int compare(const char *a, const char *b) {
    decimal_t x, y;
    if (!decimal_parse(a, strlen(a), &x) || !decimal_parse(b, strlen(b), &y)) return 99;
    return decimal_compare(&x, &y);
}

static bool lookup_is(const char *json, const char *expected) {
    const char *value;
    size_t len;
    bool found = json_top_level_scalar(json, strlen(json), "amount", 6, &value, &len);
    if (!expected) return !found;
    return found && len == strlen(expected) && memcmp(value, expected, len) == 0;
}

int main(void) {
    check(compare("1000", "1000.00") == 0, "trailing zeros are equal");
    check(compare("150.25", "1000") == -1, "smaller integer part");
    check(compare("0999.5", "999.49") == 1, "leading zeros, fraction decides");
    check(compare("1.5", "1.50") == 0, "missing fraction digits are zeros");
    check(compare("12345678901234567890.1", "12345678901234567890.09") == 1, "beyond 64 bits");
    check(compare("1.", "1") == 99, "a dot needs digits after it");
    check(compare("-1", "1") == 99, "no sign");
    check(compare("1e3", "1") == 99, "no exponent");
    check(lookup_is("{\"id\":\"a\",\"Amount\": \"150.25\"}", "150.25"), "string value, any case");
    check(lookup_is("{\"x\":{\"amount\":\"5\"},\"amount\":12.5}", "12.5"), "nested key skipped");
    check(lookup_is("{\"s\":\"\\\"amount\\\":1\",\"y\":[\"amount\",1]}", NULL), "keys in strings");
    check(lookup_is("[1]", NULL), "not an object");
    check(lookup_is("{\"amount\":\"5", NULL), "unterminated string");
    check(lookup_is("{\"amount\":true}", NULL), "not a scalar we read");
    printf("%d passed, %d failed\n", 14 - failures, failures);
    return failures != 0;
}
