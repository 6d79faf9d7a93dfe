;; `run` never returns: a loop that calls nothing and touches no memory, so only the
;; interruption check at its header can end it.
(component
  (core module $m
    (memory (export "memory") 1)
    ;; cabi_realloc for the argument: one fixed place is enough for one short call.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (loop $spin (br $spin))
      (unreachable))
  )
  (core instance $i (instantiate $m))
  (func $run (param "args" string) (result string)
    (canon lift (core func $i "run") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $run-instance (export "run" (func $run)))
  (export "component:run/run" (instance $run-instance))
)
