// handle_test.c: runs exports_plugin_handle natively, with the two host imports stubbed at the
// generated bindings' lowest level, for the paths `gateway plugin run` cannot reach (an event
// that already has the extension; an empty extension list whose pointer is not from malloc).
// Run by the test suite (tests/e2e/plugin_example_c.rs, with B = the bindings the suite
// generates, target/plugin-tools/c-large-deposits/bindings), or by hand:
//   clang -gdwarf-4 -Wno-unknown-attributes -I$B -o /tmp/handle_test handle_test.c \
//       large_deposits.c decimal.c $B/plugin.c
//   valgrind -q --leak-check=full --error-exitcode=3 /tmp/handle_test   (apt-get install valgrind)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

static int failures = 0, passes = 0;

static void check(bool ok, const char *what) {
    if (ok) passes++;
    else { printf("FAILED: %s\n", what); failures++; }
}

// The generated plugin.c calls these wasm imports; natively we define them.
void __component_type_object_force_link_plugin(void) {}

void __wasm_import_webhook_gateway_plugin_host_log(int32_t level, uint8_t *text, size_t len) {
    (void)level, (void)text, (void)len;
}

// option<string> in the canonical ABI: a tag byte, then pointer and length at word offsets.
void __wasm_import_webhook_gateway_plugin_host_setting(uint8_t *key, size_t len, uint8_t *ret) {
    ret[0] = 0;
    if (len != 9 || memcmp(key, "threshold", 9) != 0) return;
    plugin_string_t value;
    plugin_string_dup(&value, "1000");  // the host's copy, owned by the plugin
    ret[0] = 1;
    memcpy(ret + sizeof(void *), &value.ptr, sizeof value.ptr);
    memcpy(ret + 2 * sizeof(void *), &value.len, sizeof value.len);
}

static plugin_string_t dup(const char *text) {
    plugin_string_t s;
    plugin_string_dup(&s, text);
    return s;
}

static bool string_is(plugin_string_t s, const char *text) {
    return s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

static plugin_event_t deposit(const char *data) {
    plugin_event_t event = {0};
    event.id = dup("evt_1");
    event.source = dup("ledger");
    event.type = dup("ledger.transaction.completed");
    event.provider = dup("ledger");
    event.data = dup(data);
    return event;
}

int main(void) {
    plugin_verdict_t verdict;
    plugin_failure_t failure;

    // An existing pair is replaced, not duplicated; other pairs stay.
    plugin_event_t event = deposit("{\"amount\":\"2500.00\"}");
    event.extensions.len = 2;
    event.extensions.ptr = malloc(2 * sizeof *event.extensions.ptr);
    event.extensions.ptr[0] = (plugin_tuple2_string_string_t){dup("region"), dup("eu")};
    event.extensions.ptr[1] = (plugin_tuple2_string_string_t){dup("largedeposit"), dup("false")};
    check(exports_plugin_handle(&event, &verdict, &failure), "large: ok");
    plugin_list_tuple2_string_string_t *ext = &verdict.val.pass.extensions;
    check(verdict.tag == WEBHOOK_GATEWAY_PLUGIN_TYPES_VERDICT_PASS && ext->len == 2 &&
              string_is(ext->ptr[0].f1, "eu") && string_is(ext->ptr[1].f0, "largedeposit") &&
              string_is(ext->ptr[1].f1, "true"),
          "existing extension replaced");
    plugin_verdict_free(&verdict);  // what cabi_post_handle does

    // An empty list may point anywhere aligned: it must not reach realloc.
    event = deposit("{\"amount\":\"1000\"}");
    event.extensions.ptr = (plugin_tuple2_string_string_t *)sizeof(void *);
    check(exports_plugin_handle(&event, &verdict, &failure), "empty list: ok");
    ext = &verdict.val.pass.extensions;
    check(ext->len == 1 && string_is(ext->ptr[0].f1, "true"), "extension added to empty list");
    plugin_verdict_free(&verdict);

    // Below the threshold: passed unchanged.
    event = deposit("{\"amount\":\"999.99\"}");
    check(exports_plugin_handle(&event, &verdict, &failure), "small: ok");
    check(verdict.val.pass.extensions.len == 0, "small: not tagged");
    plugin_verdict_free(&verdict);

    // A non-decimal amount: fatal, and the event is freed by the plugin (valgrind sees leaks).
    event = deposit("{\"amount\":\"lots\"}");
    check(!exports_plugin_handle(&event, &verdict, &failure), "bad amount: err");
    check(failure.tag == WEBHOOK_GATEWAY_PLUGIN_TYPES_FAILURE_FATAL &&
              string_is(failure.val.fatal, "amount is not a decimal: lots"),
          "bad amount: fatal reason");
    plugin_failure_free(&failure);

    printf("%d passed, %d failed\n", passes, failures);
    return failures != 0;
}
