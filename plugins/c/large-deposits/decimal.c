// decimal.c: see decimal.h.
#include "decimal.h"

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool decimal_parse(const char *text, size_t len, decimal_t *out) {
    size_t i = 0;
    while (i < len && is_digit(text[i])) i++;
    if (i == 0) return false;
    out->int_part = text;
    out->int_len = i;
    out->frac_part = text + len;
    out->frac_len = 0;
    if (i == len) return true;
    if (text[i] != '.') return false;
    size_t start = ++i;
    while (i < len && is_digit(text[i])) i++;
    if (i != len || i == start) return false;
    out->frac_part = text + start;
    out->frac_len = len - start;
    return true;
}

int decimal_compare(const decimal_t *a, const decimal_t *b) {
    const char *ai = a->int_part, *bi = b->int_part;
    size_t al = a->int_len, bl = b->int_len;
    while (al > 1 && *ai == '0') { ai++; al--; }
    while (bl > 1 && *bi == '0') { bi++; bl--; }
    if (al != bl) return al < bl ? -1 : 1;
    for (size_t k = 0; k < al; k++)
        if (ai[k] != bi[k]) return ai[k] < bi[k] ? -1 : 1;
    // Fractions: a missing digit counts as 0, so "1.5" == "1.50".
    size_t n = a->frac_len > b->frac_len ? a->frac_len : b->frac_len;
    for (size_t k = 0; k < n; k++) {
        char x = k < a->frac_len ? a->frac_part[k] : '0';
        char y = k < b->frac_len ? b->frac_part[k] : '0';
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Index just past the string that starts at json[i] == '"', or 0 if it never ends.
static size_t skip_string(const char *json, size_t len, size_t i) {
    for (i++; i < len; i++) {
        if (json[i] == '\\') i++;
        else if (json[i] == '"') return i + 1;
    }
    return 0;
}

bool json_top_level_scalar(const char *json, size_t len, const char *key, size_t key_len,
                           const char **value, size_t *value_len) {
    size_t i = 0;
    while (i < len && is_space(json[i])) i++;
    if (i == len || json[i] != '{') return false;
    int depth = 0;
    bool expect_key = false;
    for (; i < len; i++) {
        char c = json[i];
        if (c == '{' || c == '[') { depth++; expect_key = (c == '{' && depth == 1); continue; }
        if (c == '}' || c == ']') { depth--; continue; }
        if (c == ',' && depth == 1) { expect_key = true; continue; }
        if (c != '"') continue;
        size_t end = skip_string(json, len, i);
        if (end == 0) return false;
        if (depth != 1 || !expect_key) { i = end - 1; continue; }
        expect_key = false;
        const char *name = json + i + 1;
        size_t name_len = end - i - 2;
        size_t j = end;
        while (j < len && is_space(json[j])) j++;
        if (j == len || json[j] != ':') return false;
        j++;
        while (j < len && is_space(json[j])) j++;
        bool match = name_len == key_len;
        for (size_t k = 0; match && k < key_len; k++) match = lower(name[k]) == lower(key[k]);
        if (match && j < len) {
            if (json[j] == '"') {
                size_t vend = skip_string(json, len, j);
                if (vend == 0) return false;
                *value = json + j + 1;
                *value_len = vend - j - 2;
                return true;
            }
            size_t v = j;
            while (v < len && (is_digit(json[v]) || json[v] == '.' || json[v] == '-' ||
                               json[v] == '+' || json[v] == 'e' || json[v] == 'E'))
                v++;
            if (v == j) return false;
            *value = json + j;
            *value_len = v - j;
            return true;
        }
        i = j - 1;
    }
    return false;
}
