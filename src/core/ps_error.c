/* ps_error: the table behind ps_strerror(). */
#include "core/ps_error.h"

const char *ps_strerror(int err) {
  switch (err) {
  case PS_OK:
    return "ok";
#define PS__ERR_CASE(name, msg)                                               \
  case PS_E##name:                                                            \
    return msg;
    PS_ERRNO_MAP(PS__ERR_CASE)
#undef PS__ERR_CASE
  default:
    return "unknown error";
  }
}
