// large-deposits: tags deposits at or above a threshold with the extension
// ("largedeposit", "true"); passes every event on, data untouched. The C counterpart of
// rust/threshold's `flag` mode, written against the bindings `wit-bindgen c` generates.
//
// Settings ([plugins.NAME.settings]):
// - `threshold` (required): a decimal such as "1000" or "0.5"; missing or not a decimal: every
//   call fails fatally naming the setting (a config mistake must not let events through
//   untagged).
// - `amount_field`: the top-level key in `data` holding the amount, matched ignoring ASCII
//   case; default `amount`. An event without it passes unchanged (logged at debug); an amount
//   that is present but not a plain decimal fails fatally.
//
// Ownership (the generated bindings' rules): the event argument is ours; everything reachable
// from the verdict or failure we return is freed by the generated post-return function
// (`cabi_post_handle`) with free(). So every returned string or list is malloc'ed, never a
// literal or static memory; strings from host.setting are ours to free; strings passed to
// host.log are only borrowed. No libc I/O: the module imports no WASI at all.
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "plugin.h"

#define EXTENSION_NAME "largedeposit"

// A malloc'ed copy of n bytes (an empty string needs no buffer: post-return frees only
// strings with len > 0).
static plugin_string_t copy_bytes(const void *bytes, size_t n) {
    plugin_string_t s = {NULL, 0};
    if (n == 0) return s;
    s.ptr = malloc(n);
    if (!s.ptr) abort();
    memcpy(s.ptr, bytes, n);
    s.len = n;
    return s;
}

// a + b + c, malloc'ed.
static plugin_string_t concat3(const void *a, size_t an, const void *b, size_t bn,
                               const void *c, size_t cn) {
    plugin_string_t s = {NULL, 0};
    size_t n = an + bn + cn;
    if (n == 0) return s;
    s.ptr = malloc(n);
    if (!s.ptr) abort();
    memcpy(s.ptr, a, an);
    memcpy(s.ptr + an, b, bn);
    memcpy(s.ptr + an + bn, c, cn);
    s.len = n;
    return s;
}

static void log_for_event(webhook_gateway_plugin_host_level_t level, const plugin_event_t *event,
                          const char *message) {
    plugin_string_t line = concat3(event->id.ptr, event->id.len, ": ", 2, message, strlen(message));
    webhook_gateway_plugin_host_log(level, &line);
    plugin_string_free(&line);
}

// Fails fatally with `what` followed by the offending text.
static bool fatal(plugin_failure_t *err, plugin_event_t *event, const char *what,
                  const uint8_t *text, size_t text_len) {
    err->tag = WEBHOOK_GATEWAY_PLUGIN_TYPES_FAILURE_FATAL;
    err->val.fatal = concat3(what, strlen(what), text, text_len, "", 0);
    plugin_event_free(event);  // the event is ours and is not returned
    return false;
}

// Sets extension `name` to `value`, replacing an existing pair of that name.
static void set_extension(plugin_event_t *event, const char *name, const char *value) {
    plugin_list_tuple2_string_string_t *list = &event->extensions;
    size_t name_len = strlen(name);
    for (size_t i = 0; i < list->len; i++) {
        plugin_tuple2_string_string_t *pair = &list->ptr[i];
        if (pair->f0.len == name_len && memcmp(pair->f0.ptr, name, name_len) == 0) {
            plugin_string_free(&pair->f1);
            pair->f1 = copy_bytes(value, strlen(value));
            return;
        }
    }
    // An empty list's pointer is not necessarily from malloc (the canonical ABI may pass any
    // aligned value), so it is never given to realloc.
    size_t bytes = (list->len + 1) * sizeof *list->ptr;
    plugin_tuple2_string_string_t *grown =
        list->len == 0 ? malloc(bytes) : realloc(list->ptr, bytes);
    if (!grown) abort();
    grown[list->len].f0 = copy_bytes(name, name_len);
    grown[list->len].f1 = copy_bytes(value, strlen(value));
    list->ptr = grown;
    list->len++;
}

bool exports_plugin_handle(plugin_event_t *event, plugin_verdict_t *ret, plugin_failure_t *err) {
    plugin_string_t key, threshold_text, field;
    plugin_string_set(&key, "threshold");  // borrowed by the import: a literal is fine here
    if (!webhook_gateway_plugin_host_setting(&key, &threshold_text))
        return fatal(err, event, "setting `threshold` is required",
                     (const uint8_t *)"", 0);
    decimal_t threshold;
    bool threshold_ok =
        decimal_parse((const char *)threshold_text.ptr, threshold_text.len, &threshold);
    if (!threshold_ok) {
        fatal(err, event, "setting `threshold` is not a decimal: ", threshold_text.ptr,
              threshold_text.len);
        plugin_string_free(&threshold_text);
        return false;
    }

    plugin_string_set(&key, "amount_field");
    if (!webhook_gateway_plugin_host_setting(&key, &field)) field = copy_bytes("amount", 6);

    const char *amount_text;
    size_t amount_len;
    bool found = json_top_level_scalar((const char *)event->data.ptr, event->data.len,
                                       (const char *)field.ptr, field.len, &amount_text,
                                       &amount_len);
    plugin_string_free(&field);
    bool large = false;
    if (!found) {
        log_for_event(WEBHOOK_GATEWAY_PLUGIN_HOST_LEVEL_DEBUG, event,
                      "no amount; passed unchanged");
    } else {
        decimal_t amount;
        if (!decimal_parse(amount_text, amount_len, &amount)) {
            // Copy before fatal() frees the event the text points into.
            plugin_string_t bad = copy_bytes(amount_text, amount_len);
            plugin_string_free(&threshold_text);
            fatal(err, event, "amount is not a decimal: ", bad.ptr, bad.len);
            plugin_string_free(&bad);
            return false;
        }
        large = decimal_compare(&amount, &threshold) >= 0;
    }
    plugin_string_free(&threshold_text);  // `threshold` pointed into it

    if (large) {
        set_extension(event, EXTENSION_NAME, "true");
        log_for_event(WEBHOOK_GATEWAY_PLUGIN_HOST_LEVEL_DEBUG, event,
                      "flagged as a large deposit");
    }
    ret->tag = WEBHOOK_GATEWAY_PLUGIN_TYPES_VERDICT_PASS;
    ret->val.pass = *event;  // moved: post-return frees it
    return true;
}
