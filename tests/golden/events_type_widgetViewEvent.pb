"!*s-18*Bd-1Rc-1bandroidj5.2.0*3"e-2*2024-05-01T12:00:02Zj

widgetId-3page-3