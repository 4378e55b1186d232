/* test_fs.c — src/fs.c against what the shell and stat(2) say: mkdir -p (nested, existing,
 * a file in the way), listing (every name once, none of "." and "..", an empty directory),
 * kind and size, remove and rename with their failures. */
#include "check.h"
#include "fs.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char dir[64];

static const char *tmp_path(const char *name) {
  static char buf[8][256];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static void write_bytes(const char *path, const char *s) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fputs(s, f);
  fclose(f);
}

static void test_mkdir_p(void) {
  struct stat st;
  CHECK(agt_fs_mkdir_p(tmp_path("x/y/z")) == AGT_OK);
  CHECK(stat(tmp_path("x/y/z"), &st) == 0 && S_ISDIR(st.st_mode));
  CHECK(agt_fs_mkdir_p(tmp_path("x/y/z")) == AGT_OK);   /* already there */
  CHECK(agt_fs_mkdir_p(tmp_path("x/y/z/")) == AGT_OK);  /* trailing slash */
  write_bytes(tmp_path("file"), "abc");
  CHECK(agt_fs_mkdir_p(tmp_path("file")) == AGT_EIO);
  CHECK(strstr(agt_last_error(), "in the way") != NULL);
  CHECK(agt_fs_mkdir_p(tmp_path("file/q")) == AGT_EIO);
  CHECK(strstr(agt_last_error(), "cannot create directory") != NULL);
  CHECK(agt_fs_mkdir_p("") == AGT_EINVAL);
}

static void test_list(void) {
  CHECK(agt_fs_mkdir_p(tmp_path("l")) == AGT_OK);
  char *names = NULL;
  int64_t count = -1, bytes = -1;
  CHECK(agt_fs_list(tmp_path("l"), &names, &count, &bytes) == AGT_OK);
  CHECK(names == NULL && count == 0 && bytes == 0);
  /* enough names to grow the buffer past its first 1024 bytes */
  enum { N = 120 };
  int seen[N] = {0};
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "l/name-%03d.lua", i);
    write_bytes(tmp_path(name), "x");
  }
  CHECK(agt_fs_mkdir_p(tmp_path("l/sub")) == AGT_OK);
  CHECK(agt_fs_list(tmp_path("l"), &names, &count, &bytes) == AGT_OK);
  CHECK(count == N + 1);
  int64_t k = 0, off = 0, sub = 0, other = 0;
  while (off < bytes) {
    const char *s = names + off;
    int i;
    if (sscanf(s, "name-%03d.lua", &i) == 1 && i >= 0 && i < N) seen[i]++;
    else if (strcmp(s, "sub") == 0) sub++;
    else other++;
    off += (int64_t)strlen(s) + 1;
    k++;
  }
  CHECK(off == bytes && k == count);
  CHECK(sub == 1 && other == 0);
  int once = 1;
  for (int i = 0; i < N; i++) once &= seen[i] == 1;
  CHECK(once);
  agt_fs_free(names);
  CHECK(agt_fs_list(tmp_path("nope"), &names, &count, &bytes) == AGT_EIO);
  CHECK(strstr(agt_last_error(), "cannot open directory") != NULL);
  CHECK(names == NULL && count == 0);
}

static void test_kind_remove_rename(void) {
  int64_t size = -1;
  write_bytes(tmp_path("k"), "hello");
  CHECK(agt_fs_kind(tmp_path("k"), &size) == AGT_FS_FILE && size == 5);
  CHECK(agt_fs_kind(tmp_path("x"), NULL) == AGT_FS_DIR);
  CHECK(agt_fs_kind("/dev/null", NULL) == AGT_FS_OTHER);
  CHECK(agt_fs_kind(tmp_path("missing"), &size) == AGT_FS_NONE && size == 0);
  CHECK(agt_fs_rename(tmp_path("k"), tmp_path("k2")) == AGT_OK);
  CHECK(agt_fs_kind(tmp_path("k"), NULL) == AGT_FS_NONE);
  CHECK(agt_fs_kind(tmp_path("k2"), &size) == AGT_FS_FILE && size == 5);
  CHECK(agt_fs_rename(tmp_path("k"), tmp_path("k3")) == AGT_EIO);
  CHECK(strstr(agt_last_error(), "cannot rename") != NULL);
  CHECK(agt_fs_remove(tmp_path("k2")) == AGT_OK);
  CHECK(agt_fs_kind(tmp_path("k2"), NULL) == AGT_FS_NONE);
  CHECK(agt_fs_remove(tmp_path("k2")) == AGT_EIO);
  CHECK(agt_fs_remove(tmp_path("x")) == AGT_EIO);       /* not empty */
  CHECK(agt_fs_remove(tmp_path("x/y/z")) == AGT_OK);    /* empty directory */
  CHECK(agt_fs_kind(tmp_path("x/y/z"), NULL) == AGT_FS_NONE);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/agt-test-fs-XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_mkdir_p();
  test_list();
  test_kind_remove_rename();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_summary();
}
