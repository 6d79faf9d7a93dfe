// A Limes function written in C: `component:run/run`, as the Rust guests export it.
//
// `cargo xtask guests` generates the bindings of guests/wit/run.wit (runnable.h), compiles this
// file with them against wasi-libc, and wraps the result into target/guests/c-hello.wasm
// (see README.md beside it).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runnable.h"

// Finds `key=value` among the space-separated pairs of `args`; returns the value's length and
// points `*value` at it, or returns 0 if the key is absent.
static size_t lookup(const runnable_string_t *args, const char *key, const uint8_t **value) {
    size_t key_len = strlen(key);
    size_t i = 0;
    while (i < args->len) {
        size_t start = i;
        while (i < args->len && args->ptr[i] != ' ') i++;
        size_t len = i - start;
        if (len > key_len && args->ptr[start + key_len] == '=' &&
            memcmp(args->ptr + start, key, key_len) == 0) {
            *value = args->ptr + start + key_len + 1;
            return len - key_len - 1;
        }
        i++;
    }
    return 0;
}

// The component model hands `args` to the callee, which frees it; `ret` must be allocated with
// malloc, as the generated post-return function frees it after the host has copied it out.
void exports_component_run_run_run(runnable_string_t *args, runnable_string_t *ret) {
    const uint8_t *name = (const uint8_t *)"world";
    size_t name_len = lookup(args, "name", &name);
    if (name_len == 0) name_len = strlen((const char *)name);

    const char *format = "hello, %.*s, from C";
    int len = snprintf(NULL, 0, format, (int)name_len, (const char *)name);
    char *out = malloc((size_t)len + 1);
    if (out == NULL) abort();  // a trap: the node answers 500 and serves on
    snprintf(out, (size_t)len + 1, format, (int)name_len, (const char *)name);
    runnable_string_free(args);

    ret->ptr = (uint8_t *)out;
    ret->len = (size_t)len;
}
