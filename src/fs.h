/* fs.h — the few file-system operations the engine and the Lua library need, with messages.
 *
 * Lua reaches the file system through these (bindings/agt/fs.lua) instead of declaring libc's
 * structures by hand: `struct dirent` and `struct stat` differ between C libraries and
 * architectures, and only C sees the right ones. Every fallible call returns an agt_status and
 * leaves a message naming the path and the system's reason (agt_last_error()).
 *
 * agt_fs_mkdir_p: `mkdir -p` (mode 0755); succeeds when the directory exists, fails when a
 *   file of that name is in the way.
 * agt_fs_list: the names in a directory ("." and ".." left out), in no particular order, as
 *   one buffer of NUL-terminated names: *names (owned by the caller, released with
 *   agt_fs_free), *count names, *bytes bytes in all. An empty directory gives *names = NULL.
 * agt_fs_kind: AGT_FS_NONE when nothing is at path (or it cannot be reached), else the kind of
 *   what is there (symbolic links followed); *size (may be NULL) receives its size in bytes.
 * agt_fs_remove: removes a file or an empty directory. agt_fs_rename: rename(2), atomic within
 *   one file system. */
#ifndef AGT_FS_H
#define AGT_FS_H

#include "status.h"

/* ffi:begin */
enum { AGT_FS_NONE = 0, AGT_FS_FILE = 1, AGT_FS_DIR = 2, AGT_FS_OTHER = 3 };
agt_status agt_fs_mkdir_p(const char *path);
agt_status agt_fs_list(const char *path, char **names, int64_t *count, int64_t *bytes);
void agt_fs_free(char *names);
int agt_fs_kind(const char *path, int64_t *size);
agt_status agt_fs_remove(const char *path);
agt_status agt_fs_rename(const char *from, const char *to);
/* Opens path for reading without blocking (a FIFO does not wait for a writer), and keeps it
 * only when it is a regular file (symbolic links followed): *fd (close it with close()), its
 * size, and ident = {inode, size, mtime s, mtime ns}, which changes when the content is
 * replaced. A FIFO, device, socket or directory is refused, the message naming what it is. */
agt_status agt_fs_open_regular(const char *path, int *fd, int64_t *size, int64_t *ident);
/* ffi:end */

#endif
