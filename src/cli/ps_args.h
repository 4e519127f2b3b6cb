/*
 * ps_args: the command-line conventions shared by penstock's client commands
 * (`penstock send`, `penstock bench`): options are `--name VALUE` or
 * `--name=VALUE`, integers are checked against bounds, addresses are
 * HOST:PORT. Error texts name the option and the value.
 */
#ifndef PS_ARGS_H
#define PS_ARGS_H

#include <stddef.h>

/**
 * Reads the option argv[*i] (which starts with "--") and its value: after '='
 * or, else, the next argument (*i then moves past it). with_value[0..n) are
 * the options that take a value. Sets flag (the option's name, cut to
 * flaglen) and *value. Returns 0, or PS_EINVAL with "unknown option '...'" or
 * "... needs a value" in err.
 */
int ps_args_option(int argc, char **argv, int *i, const char *const *with_value, size_t n, char *flag,
                   size_t flaglen, const char **value, char *err, size_t errlen);

/**
 * Parses v as a decimal integer in [lo, hi] into *out. Returns 0, or
 * PS_EINVAL with "<flag>: 'v' is not an integer from lo to hi" in err.
 */
int ps_args_int(const char *flag, const char *v, long long lo, long long hi, long long *out, char *err,
                size_t errlen);

/** Returns 1 if a is HOST:PORT with a port 1..65535 ([v6]:PORT too) or a unix: target, else 0. */
int ps_args_addr_ok(const char *a);

#endif
