"!*s-18*Bd-1Rc-1bandroidj5.2.0*h"e-1*2024-05-01T12:00:01ZRK
page-2
referrer-2
key-16value-4
key-2value-2
key-9value-3