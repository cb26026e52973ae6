/* Hot reload: one uv_fs_event_t on the script's directory and a debounce
 * timer.
 *
 * The directory is watched, not the file: editors that save by writing a
 * temporary file and renaming it over the script replace the inode, and a
 * watch on the file itself would be lost with it. Events for the script's
 * name or for any *.lua file next to it (modules the script requires from
 * its directory) restart a short timer, so that a burst of events from one
 * save becomes one reload. When the timer fires, the script and the *.lua
 * files next to it are hashed together; nothing is reloaded when the hash is
 * the one of the last (attempted) load, since editors and `touch` produce
 * events without changing anything.
 *
 * The server runs one watcher, so its state is a static here and server.h
 * needs no field for it. */
#include "reload.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bridge.h"
#include "context.h"
#include "error.h"
#include "gate.h"
#include "log.h"

/* Bursts of events closer together than this become one reload. */
#define DEBOUNCE_MS 150
/* Directory entries hashed at most (a script's directory is small). */
#define MAX_FILES 4096

static struct {
  mr_server *srv;
  uv_fs_event_t event;
  uv_timer_t timer;
  int started; /* both handles initialised and not yet closed */
  char dir[4096];
  char base[1024]; /* the script's file name within dir */
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len;
  char changed[256]; /* the first file named by this burst's events */
  unsigned nchanged; /* relevant events in this burst */
} R;

/* ---- hashing --------------------------------------------------------------
 */

static int ends_with_lua(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

static int relevant(const char *name) {
  /* No name: the kernel did not say which file (e.g. a queue overflow), so
   * look anyway; the hash decides. */
  if (!name)
    return 1;
  if (name[0] == '.')
    return strcmp(name, R.base) == 0; /* hidden editor swap/backup files */
  return strcmp(name, R.base) == 0 || ends_with_lua(name);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Feeds "name\0<content><size as 8 bytes>" of one file into ctx; a file
 * that cannot be read contributes its name and a marker. Returns 0 when the
 * file was read, else the errno of the failure. */
static int hash_file(EVP_MD_CTX *ctx, const char *name) {
  char path[sizeof R.dir + sizeof R.base + 2];
  snprintf(path, sizeof path, "%s/%s", R.dir, name);
  EVP_DigestUpdate(ctx, name, strlen(name) + 1);
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno ? errno : EIO;
    EVP_DigestUpdate(ctx, "\xff-missing", 9);
    return e;
  }
  unsigned char buf[16384];
  unsigned long long total = 0;
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    EVP_DigestUpdate(ctx, buf, n);
    total += n;
  }
  fclose(f);
  EVP_DigestUpdate(ctx, &total, sizeof total);
  return 0;
}

/* Hashes the script and every *.lua file in its directory, in name order.
 * Returns 0, or the errno of failing to read the script itself. */
static int compute_digest(unsigned char *md, unsigned int *mdlen) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx) {
    *mdlen = 0;
    return ENOMEM;
  }
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  int script_err = hash_file(ctx, R.base);

  char **names = NULL;
  size_t n = 0, cap = 0;
  DIR *d = opendir(R.dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_FILES) {
      if (e->d_name[0] == '.' || !ends_with_lua(e->d_name) ||
          strcmp(e->d_name, R.base) == 0)
        continue;
      if (n == cap) {
        size_t ncap = cap ? cap * 2 : 32;
        char **nn = realloc(names, ncap * sizeof *nn);
        if (!nn)
          break;
        names = nn;
        cap = ncap;
      }
      if (!(names[n] = strdup(e->d_name)))
        break;
      n++;
    }
    closedir(d);
  }
  if (n > 1)
    qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++) {
    hash_file(ctx, names[i]);
    free(names[i]);
  }
  free(names);
  EVP_DigestFinal_ex(ctx, md, mdlen);
  EVP_MD_CTX_free(ctx);
  return script_err;
}

/* ---- reloading --------------------------------------------------------------
 */

/* Locates the script's directory and name (once). Returns 0, or
 * UV_ENAMETOOLONG after logging. */
static int locate(mr_server *srv) {
  if (R.srv == srv)
    return 0;
  const char *script = srv->cfg.script;
  const char *slash = strrchr(script, '/');
  const char *base = slash ? slash + 1 : script;
  size_t dlen = slash ? (size_t)(slash - script) : 1;
  if (slash && dlen == 0)
    dlen = 1; /* "/script.lua": the root directory */
  if (dlen >= sizeof R.dir || strlen(base) >= sizeof R.base) {
    mr_warn("%s: path too long to watch; reload with SIGHUP", script);
    return UV_ENAMETOOLONG;
  }
  memcpy(R.dir, slash ? script : ".", dlen);
  R.dir[dlen] = '\0';
  strcpy(R.base, base);
  R.srv = srv;
  compute_digest(R.digest, &R.digest_len);
  return 0;
}

int mr_reload_now(mr_server *srv, const char *why) {
  if (!srv->bridge)
    return MR_ELUA;
  /* Remember the content being loaded whatever the outcome, so that the
   * watcher does not load it again (a broken save is reported once, and
   * the next real change is tried again). */
  if (locate(srv) == 0)
    compute_digest(R.digest, &R.digest_len);
  mr_info("%s: reloading %s", why, srv->cfg.script);
  char err[2048];
  int r = mr_bridge_reload(srv->bridge, err, sizeof err);
  if (r != 0) {
    char what[4200];
    snprintf(what, sizeof what, "reload of %s failed, keeping %s",
             srv->cfg.script, mr_bridge_version(srv->bridge));
    mr_gate_log_error(what, err);
    return r;
  }
  mr_info("reloaded %s: now running %s", srv->cfg.script,
          mr_bridge_version(srv->bridge));
  return 0;
}

static void on_timer(uv_timer_t *t) {
  mr_server *srv = t->data;
  char changed[sizeof R.changed];
  unsigned nchanged = R.nchanged;
  memcpy(changed, R.changed, sizeof changed);
  R.nchanged = 0;
  if (!srv->bridge || srv->shutting_down)
    return;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  int e = compute_digest(md, &mdlen);
  if (e != 0) {
    /* Mid-rename, or deleted: the next event (the new file appearing)
     * brings us back here. */
    mr_warn("%s cannot be read (%s); keeping %s", srv->cfg.script, strerror(e),
            mr_bridge_version(srv->bridge));
    return;
  }
  if (mdlen == R.digest_len && memcmp(md, R.digest, mdlen) == 0) {
    mr_debug("%s/%s: content unchanged, not reloading", R.dir, changed);
    return;
  }
  char why[sizeof R.dir + sizeof R.changed + 32];
  snprintf(why, sizeof why, "%s/%s%s changed", R.dir, changed,
           nchanged > 1 ? " (and more)" : "");
  mr_reload_now(srv, why);
}

static void on_event(uv_fs_event_t *h, const char *filename, int events,
                     int status) {
  (void)events;
  mr_server *srv = h->data;
  if (status < 0) {
    mr_warn("watching %s: %s", R.dir, uv_strerror(status));
    return;
  }
  if (srv->shutting_down || !relevant(filename))
    return;
  if (R.nchanged++ == 0)
    snprintf(R.changed, sizeof R.changed, "%s", filename ? filename : "?");
  else if (filename && strcmp(filename, R.changed) == 0)
    R.nchanged--; /* the same file again: not "more" */
  /* Restarting the timer on every event coalesces a burst into one
   * reload, DEBOUNCE_MS after the last event. */
  uv_timer_start(&R.timer, on_timer, DEBOUNCE_MS, 0);
}

/* ---- start and stop ---------------------------------------------------------
 */

int mr_reload_start(mr_server *srv) {
  if (R.started)
    return 0;
  int r = locate(srv);
  if (r != 0)
    return r;
  r = uv_fs_event_init(srv->loop, &R.event);
  if (r == 0) {
    R.event.data = srv;
    r = uv_fs_event_start(&R.event, on_event, R.dir, 0);
    if (r != 0)
      uv_close((uv_handle_t *)&R.event, NULL);
  }
  if (r != 0) {
    mr_warn("cannot watch %s for changes: %s; reload with SIGHUP", R.dir,
            uv_strerror(r));
    return r;
  }
  uv_timer_init(srv->loop, &R.timer);
  R.timer.data = srv;
  /* Neither handle should keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&R.event);
  uv_unref((uv_handle_t *)&R.timer);
  R.started = 1;
  mr_info("watching %s for changes to %s and *.lua", R.dir, R.base);
  return 0;
}

void mr_reload_stop(mr_server *srv) {
  if (!R.started || R.srv != srv)
    return;
  R.started = 0;
  if (!uv_is_closing((uv_handle_t *)&R.event))
    uv_close((uv_handle_t *)&R.event, NULL);
  if (!uv_is_closing((uv_handle_t *)&R.timer))
    uv_close((uv_handle_t *)&R.timer, NULL);
}
