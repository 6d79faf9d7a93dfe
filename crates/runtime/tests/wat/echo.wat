;; A Limes function written by hand in the WebAssembly text format, with no Rust and no
;; wit-bindgen: `run` returns its argument. It shows that any toolchain that emits a component
;; exporting component:run/run works with Limes.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    ;; cabi_realloc: a bump allocator, enough for one call in a fresh instance.
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $at i32)
      (local.set $at
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $at) (local.get $size)))
      (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))))))
      (local.get $at))
    ;; run(args) -> string: the result (pointer, length) goes to a return area at address 0.
    (func (export "run") (param $ptr i32) (param $len i32) (result i32)
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (i32.const 0))
  )
  (core instance $i (instantiate $m))
  (func $run (param "args" string) (result string)
    (canon lift (core func $i "run") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $run-instance (export "run" (func $run)))
  (export "component:run/run" (instance $run-instance))
)
