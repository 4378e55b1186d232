/* pool.c — a persistent pthread pool behind agt_parallel_for (see pool.h).
 *
 * Workers sleep on a condition variable and wake on a new job generation. Chunks are
 * claimed through an atomic counter, so work is balanced, while chunk boundaries stay fixed by
 * (total, grain). One job at a time: concurrent callers from different threads serialise;
 * a call from inside a job (nesting) runs serially in its caller. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

enum { AGT_POOL_MAX = 256 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_cond_t cv_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t cv_done = PTHREAD_COND_INITIALIZER;
static pthread_t workers[AGT_POOL_MAX];
static int nworkers;          /* started worker threads (threads - 1) */
static int want_threads;      /* 0 = default */
static unsigned long generation;
static int stopping;
static int active;            /* workers still on the current job */
static _Thread_local int in_job;

static struct {
  agt_range_fn fn;
  void *ctx;
  size_t total, grain, nchunks;
  atomic_size_t next;
  atomic_int interrupted;
} job;

int agt_pool_default_threads(void) {
  const char *env = getenv("AGT_NUM_THREADS");
  if (env && *env) {
    int n = atoi(env);
    if (n >= 1) return n > AGT_POOL_MAX ? AGT_POOL_MAX : n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  return n > AGT_POOL_MAX ? AGT_POOL_MAX : (int)n;
}

int agt_pool_threads(void) { return want_threads > 0 ? want_threads : agt_pool_default_threads(); }

size_t agt_chunk_count(size_t total, size_t grain) {
  if (grain == 0) grain = 1;
  return total == 0 ? 0 : (total - 1) / grain + 1;
}

static void run_chunks(void) {
  in_job = 1;
  for (;;) {
    size_t c = atomic_fetch_add(&job.next, 1);
    if (c >= job.nchunks) break;
    if (agt_interrupted()) { atomic_store(&job.interrupted, 1); continue; }
    size_t b = c * job.grain, e = b + job.grain;
    if (e > job.total) e = job.total;
    job.fn(job.ctx, b, e, c);
  }
  in_job = 0;
}

/* arg: the generation when the thread was made (under job_mu, before the job it is made for
 * bumps it). Starting from 0 instead, a thread made after agt_pool_set_threads took the last
 * job's generation for a new one: it ran that finished job's (no) chunks and counted itself
 * done in `active`, possibly after the new job had set it, so agt_parallel_for could return
 * while the thread still ran a chunk of the new job. */
static void *worker_main(void *arg) {
  unsigned long seen = (unsigned long)(uintptr_t)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!stopping && generation == seen) pthread_cond_wait(&cv_work, &mu);
    if (stopping) break;
    seen = generation;
    pthread_mutex_unlock(&mu);
    run_chunks();
    pthread_mutex_lock(&mu);
    if (--active == 0) pthread_cond_signal(&cv_done);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

static void stop_workers(void) {
  pthread_mutex_lock(&mu);
  stopping = 1;
  pthread_cond_broadcast(&cv_work);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
  nworkers = 0;
  stopping = 0;
}

static agt_status start_workers(int threads) {
  for (int i = 0; i < threads - 1; i++) {
    if (pthread_create(&workers[i], NULL, worker_main, (void *)(uintptr_t)generation) != 0) {
      nworkers = i;
      return AGT_FAIL(AGT_ENOMEM, "cannot start thread %d of the pool", i + 1);
    }
    nworkers = i + 1;
  }
  return AGT_OK;
}

agt_status agt_pool_set_threads(int n) {
  if (n > AGT_POOL_MAX) return AGT_FAIL(AGT_EINVAL, "at most %d threads, got %d", AGT_POOL_MAX, n);
  pthread_mutex_lock(&job_mu);
  want_threads = n > 0 ? n : 0;
  stop_workers(); /* restarted lazily at the next job, at the new size */
  pthread_mutex_unlock(&job_mu);
  return AGT_OK;
}

agt_status agt_parallel_for(size_t total, size_t grain, agt_range_fn fn, void *ctx) {
  if (grain == 0) grain = 1;
  size_t nchunks = agt_chunk_count(total, grain);
  if (nchunks == 0) return AGT_OK;
  int threads = agt_pool_threads();
  if (in_job || threads <= 1 || nchunks == 1) {
    for (size_t c = 0; c < nchunks; c++) {
      if (agt_interrupted()) return AGT_FAIL(AGT_EINTR, "interrupted");
      size_t b = c * grain, e = b + grain;
      if (e > total) e = total;
      fn(ctx, b, e, c);
    }
    return AGT_OK;
  }
  pthread_mutex_lock(&job_mu);
  if (nworkers != threads - 1) {
    stop_workers();
    agt_status s = start_workers(threads);
    if (s != AGT_OK && nworkers == 0) {
      pthread_mutex_unlock(&job_mu);
      return s;
    }
  }
  pthread_mutex_lock(&mu);
  job.fn = fn;
  job.ctx = ctx;
  job.total = total;
  job.grain = grain;
  job.nchunks = nchunks;
  atomic_store(&job.next, 0);
  atomic_store(&job.interrupted, 0);
  active = nworkers;
  generation++;
  pthread_cond_broadcast(&cv_work);
  pthread_mutex_unlock(&mu);

  run_chunks();

  pthread_mutex_lock(&mu);
  while (active > 0) pthread_cond_wait(&cv_done, &mu);
  pthread_mutex_unlock(&mu);
  int intr = atomic_load(&job.interrupted);
  pthread_mutex_unlock(&job_mu);
  return intr ? AGT_FAIL(AGT_EINTR, "interrupted") : AGT_OK;
}
