;; A valid component that exports nothing.
(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
)
