"!*s-18*Bd-1Rc-1bandroidj5.2.0*4"e-3*2024-05-01T12:00:03Zr
elementId-4page-4