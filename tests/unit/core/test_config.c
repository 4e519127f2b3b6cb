/* Unit tests of ps_config: defaults, validation naming the variable, dotenv files and precedence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ps_config.h"
#include "core/ps_error.h"
#include "ps_test.h"

static void clear_env(void) {
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  for (size_t i = 0; i < n; i++)
    unsetenv(t[i].name);
  unsetenv("PS_TEST_A");
  unsetenv("PS_TEST_B");
  unsetenv("PS_TEST_C");
}

static char dir[] = "/tmp/ps-config-XXXXXX";

static void write_file(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

PS_TEST(defaults) {
  clear_env();
  ps_config c;
  char err[256];
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  PS_CHECK_INT_EQ(c.port, 50051);
  PS_CHECK_INT_EQ(c.grpc_max_recv_bytes, 10 * 1024 * 1024);
  PS_CHECK_INT_EQ(c.queue_capacity, 10000);
  PS_CHECK_INT_EQ(c.dispatch_timeout_ms, 1000);
  PS_CHECK_INT_EQ(c.worker_pool_size, sysconf(_SC_NPROCESSORS_ONLN));
  PS_CHECK_STR_EQ(c.event_exchange, "grpc_event.tx");
  PS_CHECK_STR_EQ(c.rabbitmq_url, "amqp://guest:guest@127.0.0.1:5672/");
  PS_CHECK_INT_EQ(c.consumers_per_queue, 2);
  PS_CHECK_STR_EQ(c.clickhouse_url, "http://127.0.0.1:8123");
  PS_CHECK_STR_EQ(c.clickhouse_db, "default");
  PS_CHECK_INT_EQ(c.clickhouse_batch_rows, 50000);
  PS_CHECK_INT_EQ(c.clickhouse_flush_ms, 1000);
  PS_CHECK_INT_EQ(c.shutdown_timeout_ms, 30000);
  PS_CHECK_INT_EQ(c.publish_merge_batches, 16);
  PS_CHECK_STR_EQ(c.publish_format, "events");
  PS_CHECK_INT_EQ(c.publish_as, PS_PUBLISH_EVENTS);
  PS_CHECK_STR_EQ(c.queue_type, "classic");
  ps_config_free(&c);
}

PS_TEST(invalid_values_name_the_variable) {
  struct {
    const char *name, *value;
  } bad[] = {{"PORT", "abc"},          {"PORT", "70000"},        {"EVENT_WORKER_POOL_SIZE", "0"},
             {"GRPC_MAX_RECV_BYTES", "10X"}, {"DISPATCH_TIMEOUT_MS", "-1"}, {"RABBITMQ_URL", "http://x"},
             {"CLICKHOUSE_URL", "tcp://x"},  {"LOG_LEVEL", "loud"},   {"CLICKHOUSE_DB_NAME", "a;drop"},
             {"PUBLISH_FORMAT", "ndjson"},   {"PUBLISH_MERGE_BATCHES", "0"}, {"PUBLISH_MERGE_BATCHES", "65"},
             {"QUEUE_TYPE", "stream"},       {"QUEUE_TYPE", "Quorum"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    clear_env();
    setenv(bad[i].name, bad[i].value, 1);
    ps_config c;
    char err[256] = "";
    int rc = ps_config_load(&c, dir, err, sizeof err);
    ps_config_free(&c);
    PS_CHECK_MSG(rc == PS_ECONFIG, "%s=%s accepted", bad[i].name, bad[i].value);
    PS_CHECK_MSG(strstr(err, bad[i].name) != NULL, "message '%s' does not name %s", err, bad[i].name);
  }
}

/* PUBLISH_FORMAT: the names of the three formats, in any case. */
PS_TEST(publish_format_names_the_format) {
  static const struct {
    const char *format;
    ps_publish_format as;
  } cases[] = {{"events", PS_PUBLISH_EVENTS}, {"packed", PS_PUBLISH_PACKED}, {"protobuf", PS_PUBLISH_PROTOBUF},
               {"PROTOBUF", PS_PUBLISH_PROTOBUF}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    clear_env();
    setenv("PUBLISH_FORMAT", cases[i].format, 1);
    ps_config c;
    char err[256] = "";
    int rc = ps_config_load(&c, dir, err, sizeof err);
    clear_env();
    PS_CHECK_MSG(rc == 0, "%s: %s", cases[i].format, err);
    PS_CHECK_MSG(c.publish_as == cases[i].as, "%s: %d", cases[i].format, (int)c.publish_as);
    ps_config_free(&c);
  }
}

PS_TEST(queue_type_is_classic_or_quorum) {
  clear_env();
  setenv("QUEUE_TYPE", "quorum", 1);
  ps_config c;
  char err[256] = "";
  int rc = ps_config_load(&c, dir, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  PS_CHECK_STR_EQ(c.queue_type, "quorum");
  ps_config_free(&c);
}

/* PUBLISH_LINGER_MS: unset, it follows PUBLISH_FORMAT (2 packed, 0 events); set, it is taken as it is. */
PS_TEST(publish_linger_defaults_by_format_and_is_bounded) {
  struct {
    const char *format, *linger;
    int rc, want;
  } cases[] = {{NULL, NULL, 0, 0},       {"events", NULL, 0, 0}, {"packed", NULL, 0, 2}, {"packed", "", 0, 2},
               {"packed", "0", 0, 0},    {"events", "7", 0, 7},  {"packed", "100", 0, 100},
               {"packed", "101", PS_ECONFIG, 0}, {"events", "-1", PS_ECONFIG, 0}, {"protobuf", NULL, 0, 2}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    clear_env();
    if (cases[i].format)
      setenv("PUBLISH_FORMAT", cases[i].format, 1);
    if (cases[i].linger)
      setenv("PUBLISH_LINGER_MS", cases[i].linger, 1);
    ps_config c;
    char err[256] = "";
    int rc = ps_config_load(&c, dir, err, sizeof err);
    PS_CHECK_MSG(rc == cases[i].rc, "case %zu: rc %d (%s)", i, rc, err);
    if (rc == 0)
      PS_CHECK_MSG(c.publish_linger_ms == cases[i].want, "case %zu: linger %d, want %d", i, c.publish_linger_ms,
                   cases[i].want);
    else
      PS_CHECK_MSG(strstr(err, "PUBLISH_LINGER_MS") != NULL, "case %zu: message '%s'", i, err);
    ps_config_free(&c);
  }
}

PS_TEST(sizes_take_suffixes) {
  clear_env();
  setenv("GRPC_MAX_RECV_BYTES", "4M", 1);
  ps_config c;
  char err[256];
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  PS_CHECK_INT_EQ(c.grpc_max_recv_bytes, 4 * 1024 * 1024);
  ps_config_free(&c);
}

PS_TEST(dotenv_file_by_env_and_real_environment_wins) {
  clear_env();
  write_file(".env", "PORT=6001\n");
  write_file(".env.stage", "# stage\nexport PORT=6002\nEVENT_EXCHANGE = 'stage.tx' # comment\n");
  write_file(".env.production", "PORT=6003\nCLICKHOUSE_DB_NAME=\"prod\"\n");
  ps_config c;
  char err[256];
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  PS_CHECK_INT_EQ(c.port, 6001);
  ps_config_free(&c);

  clear_env();
  setenv("ENV", "STAGE", 1);
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  PS_CHECK_INT_EQ(c.port, 6002);
  PS_CHECK_STR_EQ(c.event_exchange, "stage.tx");
  ps_config_free(&c);

  clear_env();
  setenv("ENV", "PRODUCTION", 1);
  setenv("PORT", "7000", 1);
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  PS_CHECK_INT_EQ(c.port, 7000);
  PS_CHECK_STR_EQ(c.clickhouse_db, "prod");
  ps_config_free(&c);
}

PS_TEST(dotenv_syntax) {
  clear_env();
  write_file("syntax.env", "PS_TEST_A=\"line\\nnext \\\"q\\\"\"\nPS_TEST_B='lit $x \\n'\n\n  # c\nPS_TEST_C=plain value  \n");
  char err[256], path[256];
  snprintf(path, sizeof path, "%s/syntax.env", dir);
  PS_CHECK_INT_EQ(ps_dotenv_load(path, err, sizeof err), 0);
  PS_CHECK_STR_EQ(getenv("PS_TEST_A"), "line\nnext \"q\"");
  PS_CHECK_STR_EQ(getenv("PS_TEST_B"), "lit $x \\n");
  PS_CHECK_STR_EQ(getenv("PS_TEST_C"), "plain value");

  write_file("bad.env", "GOOD=1\nthis is not an assignment\n");
  snprintf(path, sizeof path, "%s/bad.env", dir);
  PS_CHECK_INT_EQ(ps_dotenv_load(path, err, sizeof err), PS_ECONFIG);
  PS_CHECK_MSG(strstr(err, "bad.env:2") != NULL, "error '%s' lacks file:line", err);
  snprintf(path, sizeof path, "%s/missing.env", dir);
  PS_CHECK_INT_EQ(ps_dotenv_load(path, err, sizeof err), PS_ENOTFOUND);
}

PS_TEST(reference_lists_every_setting) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ps_config_print_reference(f);
  fclose(f);
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  for (size_t i = 0; i < n; i++) {
    char needle[96];
    snprintf(needle, sizeof needle, "| `%s` |", t[i].name);
    PS_CHECK_MSG(strstr(text, needle) != NULL, "reference lacks %s", t[i].name);
  }
  free(text);
}

PS_TEST(print_redacts_secrets) {
  clear_env();
  setenv("CLICKHOUSE_PASSWORD", "hunter2", 1);
  setenv("RABBITMQ_URL", "amqp://u:s3cret@h:5672/", 1);
  ps_config c;
  char err[256];
  PS_CHECK_INT_EQ(ps_config_load(&c, dir, err, sizeof err), 0);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ps_config_print(&c, f);
  fclose(f);
  ps_config_free(&c);
  PS_CHECK(strstr(text, "hunter2") == NULL);
  PS_CHECK(strstr(text, "s3cret") == NULL);
  PS_CHECK(strstr(text, "CLICKHOUSE_PASSWORD=") != NULL);
  free(text);
}

int main(int argc, char **argv) {
  if (!mkdtemp(dir))
    return 1;
  static const ps_test_case cases[] = {
      PS_CASE(defaults), PS_CASE(invalid_values_name_the_variable), PS_CASE(queue_type_is_classic_or_quorum), PS_CASE(publish_format_names_the_format),
      PS_CASE(publish_linger_defaults_by_format_and_is_bounded), PS_CASE(sizes_take_suffixes),
      PS_CASE(dotenv_file_by_env_and_real_environment_wins), PS_CASE(dotenv_syntax),
      PS_CASE(reference_lists_every_setting), PS_CASE(print_redacts_secrets)};
  int rc = ps_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    return 1;
  return rc;
}
