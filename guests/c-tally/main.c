// A Limes function in C with state: it counts flood alarms per district.
//
// `run("district=north")` adds one alarm to district north in the function's key-value store
// `default` (deploy it with `--kv default`) and answers the district's count. `cargo xtask
// guests` generates the bindings of world `runnable-with-state` (guests/wit/run.wit), which
// imports wasi:keyvalue@0.2.0-draft2, and builds target/guests/c-tally.wasm.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnable_with_state.h"

typedef runnable_with_state_string_t string_t;

// The value of `key=value` among the space-separated pairs of `args`, or `fallback`.
static string_t lookup(const string_t *args, const char *key, const char *fallback) {
    size_t key_len = strlen(key);
    size_t i = 0;
    while (i < args->len) {
        size_t start = i;
        while (i < args->len && args->ptr[i] != ' ') i++;
        size_t len = i - start;
        if (len > key_len && args->ptr[start + key_len] == '=' &&
            memcmp(args->ptr + start, key, key_len) == 0) {
            return (string_t){(uint8_t *)args->ptr + start + key_len + 1, len - key_len - 1};
        }
        i++;
    }
    return (string_t){(uint8_t *)fallback, strlen(fallback)};
}

// Why a store call failed, for the answer.
static const char *reason(const wasi_keyvalue_store_error_t *err) {
    switch (err->tag) {
        case WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE: return "no such store";
        case WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED: return "access denied (deploy with --kv default)";
        default: return "the store refused (a limit, or unavailable)";
    }
}

// Adds one to `alarms:DISTRICT`; on failure returns -1 and sets `*why`.
static int64_t count_alarm(string_t district, const char **why) {
    string_t name = {(uint8_t *)"default", 7};
    wasi_keyvalue_store_own_bucket_t bucket;
    wasi_keyvalue_store_error_t err;
    if (!wasi_keyvalue_store_open(&name, &bucket, &err)) {
        *why = reason(&err);
        wasi_keyvalue_store_error_free(&err);
        return -1;
    }
    char key[128];
    int key_len = snprintf(key, sizeof key, "alarms:%.*s", (int)district.len, (const char *)district.ptr);
    string_t k = {(uint8_t *)key, (size_t)key_len < sizeof key ? (size_t)key_len : sizeof key - 1};
    int64_t count = -1;
    if (!wasi_keyvalue_atomics_increment(wasi_keyvalue_store_borrow_bucket(bucket), &k, 1, &count, &err)) {
        *why = reason(&err);
        wasi_keyvalue_store_error_free(&err);
        count = -1;
    }
    wasi_keyvalue_store_bucket_drop_own(bucket);
    return count;
}

// `args` is the callee's to free; `ret` must come from malloc (the post-return frees it).
void exports_component_run_run_run(string_t *args, string_t *ret) {
    string_t district = lookup(args, "district", "unknown");
    const char *why = NULL;
    int64_t count = count_alarm(district, &why);
    char *out = malloc(160);
    if (out == NULL) abort();
    int len = count < 0
        ? snprintf(out, 160, "cannot count: %s", why)
        : snprintf(out, 160, "%.*s: %lld alarms", (int)district.len, (const char *)district.ptr, (long long)count);
    runnable_with_state_string_free(args);
    ret->ptr = (uint8_t *)out;
    ret->len = (size_t)len < 160 ? (size_t)len : 159;
}
