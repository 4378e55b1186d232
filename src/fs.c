/* fs.c — mkdir -p, directory listing, file kind and size, remove, rename (see fs.h). */
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096

agt_status agt_fs_mkdir_p(const char *path) {
  if (!path || !*path) return AGT_FAIL(AGT_EINVAL, "mkdir: empty path");
  char buf[PATH_CAP];
  size_t len = strlen(path);
  if (len >= sizeof buf) return AGT_FAIL(AGT_EINVAL, "mkdir: path too long: %s", path);
  memcpy(buf, path, len + 1);
  /* Each prefix ending at a '/' (or the end) in turn: "a/b/c" makes a, a/b, a/b/c. */
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char saved = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
      int e = errno;
      buf[i] = saved;
      return AGT_FAIL(AGT_EIO, "cannot create directory %s: %s", path, strerror(e));
    }
    buf[i] = saved;
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return AGT_FAIL(AGT_EIO, "cannot create directory %s: a file of that name is in the way",
                    path);
  return AGT_OK;
}

agt_status agt_fs_list(const char *path, char **names, int64_t *count, int64_t *bytes) {
  if (!path || !names || !count || !bytes) return AGT_FAIL(AGT_EINVAL, "fs_list: NULL argument");
  *names = NULL;
  *count = 0;
  *bytes = 0;
  DIR *d = opendir(path);
  if (!d) return AGT_FAIL(AGT_EIO, "cannot open directory %s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t used = 0, cap = 0;
  int64_t n = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno != 0) {
        int err = errno;
        free(buf);
        closedir(d);
        return AGT_FAIL(AGT_EIO, "cannot read directory %s: %s", path, strerror(err));
      }
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    size_t k = strlen(e->d_name) + 1;
    if (used + k > cap) {
      size_t ncap = cap ? 2 * cap : 1024;
      while (ncap < used + k) ncap *= 2;
      char *nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        closedir(d);
        return AGT_FAIL(AGT_ENOMEM, "listing directory %s: out of memory", path);
      }
      buf = nb;
      cap = ncap;
    }
    memcpy(buf + used, e->d_name, k);
    used += k;
    n++;
  }
  closedir(d);
  *names = buf;
  *count = n;
  *bytes = (int64_t)used;
  return AGT_OK;
}

void agt_fs_free(char *names) { free(names); }

int agt_fs_kind(const char *path, int64_t *size) {
  struct stat st;
  if (size) *size = 0;
  if (!path || stat(path, &st) != 0) return AGT_FS_NONE;
  if (size) *size = (int64_t)st.st_size;
  if (S_ISREG(st.st_mode)) return AGT_FS_FILE;
  if (S_ISDIR(st.st_mode)) return AGT_FS_DIR;
  return AGT_FS_OTHER;
}

agt_status agt_fs_remove(const char *path) {
  if (!path || !*path) return AGT_FAIL(AGT_EINVAL, "remove: empty path");
  if (remove(path) != 0) return AGT_FAIL(AGT_EIO, "cannot remove %s: %s", path, strerror(errno));
  return AGT_OK;
}

agt_status agt_fs_rename(const char *from, const char *to) {
  if (!from || !*from || !to || !*to) return AGT_FAIL(AGT_EINVAL, "rename: empty path");
  if (rename(from, to) != 0)
    return AGT_FAIL(AGT_EIO, "cannot rename %s to %s: %s", from, to, strerror(errno));
  return AGT_OK;
}

agt_status agt_fs_open_regular(const char *path, int *fd, int64_t *size, int64_t *ident) {
  *fd = -1;
  if (!path || !*path) return AGT_FAIL(AGT_EINVAL, "open: empty path");
  int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return AGT_FAIL(AGT_EIO, "cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(f, &st) != 0) {
    int e = errno;
    close(f);
    return AGT_FAIL(AGT_EIO, "cannot stat: %s", strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(f);
    const char *what = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode) ? "a character device"
                     : S_ISBLK(st.st_mode) ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket" : "a special file";
    return AGT_FAIL(AGT_EINVAL, "not a regular file (%s)", what);
  }
  /* Reads block from here on, as for any regular file. */
  int flags = fcntl(f, F_GETFL);
  if (flags >= 0) fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
  *fd = f;
  *size = (int64_t)st.st_size;
  ident[0] = (int64_t)st.st_ino;
  ident[1] = (int64_t)st.st_size;
  ident[2] = (int64_t)st.st_mtim.tv_sec;
  ident[3] = (int64_t)st.st_mtim.tv_nsec;
  return AGT_OK;
}
