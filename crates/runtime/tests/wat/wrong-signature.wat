;; Exports component:run/run#run, but as func(n: u32) -> u32.
(component
  (core module $m
    (func (export "run") (param i32) (result i32) (local.get 0)))
  (core instance $i (instantiate $m))
  (func $run (param "n" u32) (result u32) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "component:run/run" (instance $run-instance))
)
