/*
 * Unit tests of `penstock send`'s argument parsing: defaults, both option
 * forms, ranges, the one-input rule, options that apply to --demo only, and
 * --help.
 */
#include <string.h>

#include "cli/ps_send.h"
#include "core/ps_error.h"
#include "ps_test.h"

#define ARGC(v) ((int)(sizeof(v) / sizeof(v)[0]))

static int parse(int argc, char **argv, ps_send_options *o, char *err) {
  err[0] = '\0';
  return ps_send_parse_args(argc, argv, o, err, 256);
}

PS_TEST(defaults) {
  char *argv[] = {"send", "--demo", "10"};
  ps_send_options o;
  char err[256];
  PS_CHECK_INT_EQ(parse(ARGC(argv), argv, &o, err), 0);
  PS_CHECK_STR_EQ(o.addr, "127.0.0.1:50051");
  PS_CHECK_INT_EQ(o.demo, 10);
  PS_CHECK(o.file == NULL);
  PS_CHECK_INT_EQ(o.batch, 50);
  PS_CHECK_INT_EQ(o.concurrency, 8);
  PS_CHECK_INT_EQ(o.channels, 1);
  PS_CHECK_INT_EQ(o.timeout_ms, 10000);
  PS_CHECK(o.ids_path == NULL && o.id_prefix == NULL);
  PS_CHECK(!o.json && !o.quiet && !o.seed_set);
}

PS_TEST(every_option_both_forms) {
  char *argv[] = {"send",
                  "--addr=10.0.0.1:9000",
                  "--demo",
                  "1000",
                  "--batch=20",
                  "--concurrency",
                  "3",
                  "--channels=2",
                  "--timeout-ms",
                  "0",
                  "--ids",
                  "out.txt",
                  "--id-prefix=x",
                  "--seed",
                  "0x10",
                  "--json",
                  "--quiet"};
  ps_send_options o;
  char err[256];
  PS_CHECK_MSG(parse(ARGC(argv), argv, &o, err) == 0, "%s", err);
  PS_CHECK_STR_EQ(o.addr, "10.0.0.1:9000");
  PS_CHECK_INT_EQ(o.demo, 1000);
  PS_CHECK_INT_EQ(o.batch, 20);
  PS_CHECK_INT_EQ(o.concurrency, 3);
  PS_CHECK_INT_EQ(o.channels, 2);
  PS_CHECK_INT_EQ(o.timeout_ms, 0);
  PS_CHECK_STR_EQ(o.ids_path, "out.txt");
  PS_CHECK_STR_EQ(o.id_prefix, "x");
  PS_CHECK(o.seed_set && o.seed == 16);
  PS_CHECK(o.json && o.quiet);
}

PS_TEST(file_input_and_stdin) {
  char *argv[] = {"send", "--file", "-", "--addr", "[::1]:50051"};
  ps_send_options o;
  char err[256];
  PS_CHECK_MSG(parse(ARGC(argv), argv, &o, err) == 0, "%s", err);
  PS_CHECK_STR_EQ(o.file, "-");
  PS_CHECK_INT_EQ(o.demo, -1);
  PS_CHECK_STR_EQ(o.addr, "[::1]:50051");
}

PS_TEST(help_anywhere) {
  char *a1[] = {"send", "--help"};
  char *a2[] = {"send", "--demo", "5", "-h"};
  char *a3[] = {"send", "--bogus", "--help"}; /* the first problem wins: an unknown option */
  ps_send_options o;
  char err[256];
  PS_CHECK_INT_EQ(parse(ARGC(a1), a1, &o, err), 1);
  PS_CHECK_INT_EQ(parse(ARGC(a2), a2, &o, err), 1);
  PS_CHECK_INT_EQ(parse(ARGC(a3), a3, &o, err), PS_EINVAL);
  PS_CHECK(strstr(ps_send_usage(), "--demo N") && strstr(ps_send_usage(), "--file F") &&
           strstr(ps_send_usage(), "exit codes"));
}

/* Each bad command line fails with a reason containing the given words. */
PS_TEST(errors_name_the_problem) {
  static const struct {
    const char *args[6];
    const char *want;
  } cases[] = {
      {{"--demo", "0"}, "--demo: '0' is not an integer from 1"},
      {{"--demo", "12x"}, "--demo: '12x'"},
      {{"--demo", "-5"}, "--demo: '-5'"},
      {{"--demo", "99999999999999999999"}, "--demo"},
      {{"--demo"}, "--demo needs a value"},
      {{"--demo", "5", "--batch", "0"}, "--batch: '0'"},
      {{"--demo", "5", "--concurrency", "5000"}, "--concurrency: '5000'"},
      {{"--demo", "5", "--channels", "0"}, "--channels"},
      {{"--demo", "5", "--timeout-ms", "-1"}, "--timeout-ms"},
      {{"--demo", "5", "--addr", "localhost"}, "not HOST:PORT"},
      {{"--demo", "5", "--addr", "host:0"}, "not HOST:PORT"},
      {{"--demo", "5", "--addr", "host:70000"}, "not HOST:PORT"},
      {{"--demo", "5", "--addr", ":50051"}, "not HOST:PORT"},
      {{"--demo", "5", "--seed", "-1"}, "--seed"},
      {{"--demo", "5", "--id-prefix", "a b"}, "--id-prefix"},
      {{"--demo", "5", "--ids", ""}, "--ids needs a file name"},
      {{"--demo", "5", "--frobnicate"}, "unknown option '--frobnicate'"},
      {{"--demo=5", "stray"}, "unexpected argument 'stray'"},
      {{NULL}, "nothing to send"},
      {{"--json"}, "nothing to send"},
      {{"--demo", "5", "--file", "x.json"}, "not both"},
      {{"--file", "x.json", "--batch", "5"}, "--batch applies to --demo only"},
      {{"--file", "x.json", "--id-prefix", "p"}, "--id-prefix applies to --demo only"},
      {{"--file", ""}, "--file needs a file name"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *argv[8] = {"send"};
    int argc = 1;
    for (int k = 0; k < 6 && cases[i].args[k]; k++)
      argv[argc++] = (char *)cases[i].args[k];
    ps_send_options o;
    char err[256];
    int rc = parse(argc, argv, &o, err);
    PS_CHECK_MSG(rc == PS_EINVAL, "case %zu (%s): rc %d", i, cases[i].want, rc);
    PS_CHECK_MSG(strstr(err, cases[i].want) != NULL, "case %zu: error \"%s\" lacks \"%s\"", i, err,
                 cases[i].want);
  }
}

PS_TEST_MAIN(PS_CASE(defaults), PS_CASE(every_option_both_forms), PS_CASE(file_input_and_stdin),
             PS_CASE(help_anywhere), PS_CASE(errors_name_the_problem))
