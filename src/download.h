/* download.h — fetching data sets into a local cache, safely.
 *
 * agt_download_fetch(url, dest, sha256, bytes, flags) makes `dest` hold the file
 * whose SHA-256 (and/or size) is given, downloading it through libcurl when it is
 * not there yet. The bytes go to `dest.part` first; only after the whole file has
 * been checked is it renamed to `dest`, so a partial or corrupt download is never
 * mistaken for a whole one. A `.part` left by an interrupted transfer is resumed
 * with an HTTP Range request (a server that ignores the range gets a fresh start).
 * A download that completes but fails the check is deleted and refused
 * (AGT_ECHECKSUM); a network failure (AGT_ENET) keeps the partial file for the
 * next attempt and says which URL failed and where to put the file by hand.
 * A progress bar goes to stderr when stderr is a terminal (not with QUIET).
 * Concurrent fetches of one dest serialise on a lock of the `.part` file.
 *
 * Also: SHA-256 of a file and extraction of a .tar.gz archive
 * (regular files and directories only; absolute paths and ".." are refused). */
#ifndef AGT_DOWNLOAD_H
#define AGT_DOWNLOAD_H

#include "status.h"

/* ffi:begin */
enum { AGT_DOWNLOAD_QUIET = 1 };
/* sha256_hex: 64 hex digits, or NULL/"" when unknown; bytes: expected size, or <= 0 when
 * unknown. At least one of the two must be given. */
agt_status agt_download_fetch(const char *url, const char *dest, const char *sha256_hex,
                              int64_t bytes, int flags);
/* hex_out receives 64 lowercase hex digits and a NUL (65 bytes). */
agt_status agt_download_sha256_file(const char *path, char *hex_out);
/* Extracts a gzip'd tar archive into dest_dir; each file is written to name.part
 * then renamed. */
agt_status agt_download_untar(const char *archive, const char *dest_dir);
/* ffi:end */

#endif
