/* Hot reload: a uv_fs_event_t on the script's directory and on each of its
 * subdirectories that holds Lua files, and a debounce timer.
 *
 * Directories are watched, not files: editors that save by writing a
 * temporary file and renaming it over the script replace the inode, and a
 * watch on the file itself would be lost with it. Events for the script's
 * name or for any *.lua file in the tree (modules the script requires from
 * its directory: "util" is util.lua, "lib.util" is lib/util.lua) restart a
 * short timer, so that a burst of events from one save becomes one reload.
 * inotify is not recursive, so each subdirectory that holds Lua files (at
 * any depth below it, up to MAX_DEPTH) gets its own watch, at most
 * MAX_WATCHED_DIRS of them; a directory appearing or going away is an
 * event too, and every time the timer fires the tree is scanned again and
 * the watches follow it. Then the script and every *.lua file of the tree
 * are hashed together; nothing is reloaded when the hash is the one of the
 * last (attempted) load, since editors and `touch` produce events without
 * changing anything. Hidden files and directories (.git, editor swap
 * files) and symbolic links to directories are never looked at.
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
#include "tls.h"

/* Bursts of events closer together than this become one reload. */
#define DEBOUNCE_MS 150
/* Lua files hashed at most (a script's directory is small). */
#define MAX_FILES 4096
/* Directory entries one scan reads at most, so that a script kept next to
 * a large unrelated tree costs a bounded walk per save. */
#define MAX_ENTRIES 20000
/* How deep below the script's directory modules are looked for
 * (lib/a/b/c.lua is 3 deep), and how many subdirectories are watched. */
#define MAX_DEPTH 4
#define MAX_WATCHED_DIRS 64
/* A path relative to the script's directory. */
#define REL_MAX 512

/* One watched directory; the handle comes first, so that the callback's
 * handle is the watch. Freed in the handle's close callback. */
typedef struct {
  uv_fs_event_t event;
  char rel[REL_MAX]; /* "" for the script's directory, else "lib", "lib/a" */
} watch;

static struct {
  mr_server *srv;
  uv_timer_t timer;
  int started; /* the timer and the watches are live and not yet closed */
  char dir[4096];
  char base[1024]; /* the script's file name within dir */
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len;
  char changed[REL_MAX + 256];          /* the first file named by this burst */
  unsigned nchanged;                    /* relevant events in this burst */
  watch *watches[MAX_WATCHED_DIRS + 1]; /* [0] is the script's directory */
  unsigned nwatches;
  int warned; /* the limits were reported (once per process) */
} R;

/* ---- the tree -------------------------------------------------------------
 */

/* What one scan found: the Lua files (paths relative to the directory,
 * sorted, the script itself excluded) and the subdirectories that hold Lua
 * files somewhere below them. */
typedef struct {
  char **files;
  size_t nfiles, fcap;
  char **dirs;
  size_t ndirs, dcap;
  size_t entries; /* directory entries read */
  int over;       /* a limit was reached */
} tree;

static int ends_with_lua(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

/* Appends a copy of s to a list. Returns 0 or -1 when out of memory. */
static int list_add(char ***list, size_t *n, size_t *cap, const char *s) {
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    char **nl = realloc(*list, ncap * sizeof *nl);
    if (!nl)
      return -1;
    *list = nl;
    *cap = ncap;
  }
  if (!((*list)[*n] = strdup(s)))
    return -1;
  (*n)++;
  return 0;
}

static void tree_free(tree *t) {
  for (size_t i = 0; i < t->nfiles; i++)
    free(t->files[i]);
  for (size_t i = 0; i < t->ndirs; i++)
    free(t->dirs[i]);
  free(t->files);
  free(t->dirs);
  memset(t, 0, sizeof *t);
}

/* Walks DIR/rel: its Lua files go to t->files, and its subdirectories
 * that hold Lua files to t->dirs. Returns the number of Lua files found in
 * and below rel. */
static size_t walk(tree *t, const char *rel, int depth) {
  char path[sizeof R.dir + REL_MAX + 2], sub[REL_MAX];
  snprintf(path, sizeof path, "%s%s%s", R.dir, rel[0] ? "/" : "", rel);
  DIR *d = opendir(path);
  if (!d)
    return 0;
  size_t found = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (++t->entries > MAX_ENTRIES || t->nfiles >= MAX_FILES) {
      t->over = 1;
      break;
    }
    if (e->d_name[0] == '.')
      continue;
    if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "",
                         e->d_name) >= sizeof sub)
      continue;
    int is_dir = e->d_type == DT_DIR, is_file = e->d_type == DT_REG;
    if (e->d_type == DT_UNKNOWN) {
      /* Some file systems do not say; lstat does, and a symbolic link is
       * neither (a link to a directory could make a cycle). */
      struct stat st;
      char full[sizeof path + 256];
      snprintf(full, sizeof full, "%s/%s", path, e->d_name);
      if (lstat(full, &st) == 0) {
        is_dir = S_ISDIR(st.st_mode);
        is_file = S_ISREG(st.st_mode);
      }
    }
    if (is_file && ends_with_lua(e->d_name) &&
        (rel[0] || strcmp(e->d_name, R.base) != 0)) {
      list_add(&t->files, &t->nfiles, &t->fcap, sub);
      found++;
    } else if (is_file && !rel[0] && strcmp(e->d_name, R.base) == 0) {
      found++; /* the script itself, hashed first */
    } else if (is_dir) {
      if (depth >= MAX_DEPTH) {
        t->over = 1;
        continue;
      }
      size_t below = walk(t, sub, depth + 1);
      if (below > 0)
        list_add(&t->dirs, &t->ndirs, &t->dcap, sub);
      found += below;
    }
  }
  closedir(d);
  return found;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scans the tree into t (which the caller frees with tree_free). */
static void scan(tree *t) {
  memset(t, 0, sizeof *t);
  walk(t, "", 0);
  if (t->nfiles > 1)
    qsort(t->files, t->nfiles, sizeof *t->files, cmp_names);
  if (t->over && !R.warned) {
    R.warned = 1;
    mr_warn("%s holds more than the reload watcher looks at (%d Lua files, "
            "%d entries, %d levels deep); changes beyond that are not seen "
            "(reload with SIGHUP)",
            R.dir, MAX_FILES, MAX_ENTRIES, MAX_DEPTH);
  }
}

/* ---- hashing --------------------------------------------------------------
 */

/* Feeds "name\0<content><size as 8 bytes>" of one file into ctx; a file
 * that cannot be read contributes its name and a marker. Returns 0 when the
 * file was read, else the errno of the failure. */
static int hash_file(EVP_MD_CTX *ctx, const char *name) {
  char path[sizeof R.dir + REL_MAX + 2];
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

/* Hashes the script and every Lua file of the tree t, in name order.
 * Returns 0, or the errno of failing to read the script itself. */
static int digest_tree(const tree *t, unsigned char *md, unsigned int *mdlen) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx) {
    *mdlen = 0;
    return ENOMEM;
  }
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  int script_err = hash_file(ctx, R.base);
  for (size_t i = 0; i < t->nfiles; i++)
    hash_file(ctx, t->files[i]);
  EVP_DigestFinal_ex(ctx, md, mdlen);
  EVP_MD_CTX_free(ctx);
  return script_err;
}

/* ---- watching -------------------------------------------------------------
 */

static void on_event(uv_fs_event_t *h, const char *filename, int events,
                     int status);

static void on_watch_closed(uv_handle_t *h) { free(h); }

/* Starts watching DIR/rel into *out. Returns 0, or a negative error code
 * after logging it. */
static int watch_start(mr_server *srv, const char *rel, watch **out) {
  char path[sizeof R.dir + REL_MAX + 2];
  snprintf(path, sizeof path, "%s%s%s", R.dir, rel[0] ? "/" : "", rel);
  watch *w = calloc(1, sizeof *w);
  int r = w ? uv_fs_event_init(srv->loop, &w->event) : UV_ENOMEM;
  if (r == 0) {
    snprintf(w->rel, sizeof w->rel, "%s", rel);
    w->event.data = srv;
    r = uv_fs_event_start(&w->event, on_event, path, 0);
    if (r != 0) {
      uv_close((uv_handle_t *)&w->event, on_watch_closed);
      w = NULL;
    }
  }
  if (r != 0) {
    if (w)
      free(w);
    mr_warn("cannot watch %s for changes: %s%s", path, uv_strerror(r),
            rel[0] ? "" : "; reload with SIGHUP");
    return r;
  }
  /* No watch should keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&w->event);
  *out = w;
  return 0;
}

static void watch_stop(watch *w) {
  if (!uv_is_closing((uv_handle_t *)&w->event))
    uv_close((uv_handle_t *)&w->event, on_watch_closed);
}

/* Makes the subdirectory watches those of t: new directories that hold Lua
 * files are watched, those that no longer do (or are gone) are not. */
static void rewatch(mr_server *srv, const tree *t) {
  for (unsigned i = 1; i < R.nwatches;) {
    int keep = 0;
    for (size_t k = 0; k < t->ndirs && !keep; k++)
      keep = strcmp(R.watches[i]->rel, t->dirs[k]) == 0;
    if (keep) {
      i++;
      continue;
    }
    mr_debug("no longer watching %s/%s", R.dir, R.watches[i]->rel);
    watch_stop(R.watches[i]);
    R.watches[i] = R.watches[--R.nwatches];
  }
  for (size_t k = 0; k < t->ndirs; k++) {
    int have = 0;
    for (unsigned i = 1; i < R.nwatches && !have; i++)
      have = strcmp(R.watches[i]->rel, t->dirs[k]) == 0;
    if (have)
      continue;
    if (R.nwatches == MAX_WATCHED_DIRS + 1) {
      if (!R.warned) {
        R.warned = 1;
        mr_warn("more than %d directories under %s hold Lua files; %s/%s and "
                "others are not watched (reload with SIGHUP)",
                MAX_WATCHED_DIRS, R.dir, R.dir, t->dirs[k]);
      }
      break;
    }
    watch *w;
    if (watch_start(srv, t->dirs[k], &w) == 0) {
      R.watches[R.nwatches++] = w;
      mr_debug("watching %s/%s", R.dir, w->rel);
    }
  }
}

/* Scans the tree, follows it with the watches (once started) and hashes
 * it. Returns what digest_tree returns. */
static int refresh(mr_server *srv, unsigned char *md, unsigned int *mdlen) {
  tree t;
  scan(&t);
  if (R.started)
    rewatch(srv, &t);
  int r = digest_tree(&t, md, mdlen);
  tree_free(&t);
  return r;
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
  refresh(srv, R.digest, &R.digest_len);
  return 0;
}

/* Replaces *slot with a context made from cert and key (and ca) unless
 * they cannot be loaded; opt names the option in the log. Returns 0, or 1
 * when the files failed. */
static int swap_tls(mr_server *srv, struct mr_tls_ctx **slot, const char *opt,
                    const char *cert, const char *key, const char *ca,
                    int startup) {
  char err[1024];
  mr_tls_ctx *ctx = mr_tls_ctx_new(cert, key, ca, err, sizeof err);
  if (!ctx) {
    if (startup) {
      mr_error("%s: %s", opt, err);
    } else {
      srv->stats.tls_reload_failures++;
      mr_warn("%s: reload failed, keeping the previous certificate: %s", opt,
              err);
    }
    return 1;
  }
  char desc[512];
  mr_tls_ctx_describe(ctx, desc, sizeof desc);
  mr_tls_ctx_free(*slot);
  *slot = ctx;
  if (!startup)
    srv->stats.tls_reloads++;
  mr_info("%s %s%s: %s", opt, cert, startup ? "" : " reloaded", desc);
  return 0;
}

int mr_reload_tls(mr_server *srv, int startup) {
  const mr_config *cfg = &srv->cfg;
  int failed = 0;
  if (cfg->tls_cert[0])
    failed |= swap_tls(srv, &srv->tls, "--tls-cert", cfg->tls_cert,
                       cfg->tls_key, NULL, startup);
  if (cfg->cluster_tls_cert[0])
    failed |= swap_tls(srv, &srv->cluster_tls, "--cluster-tls-cert",
                       cfg->cluster_tls_cert, cfg->cluster_tls_key,
                       cfg->cluster_tls_ca, startup);
  return failed ? MR_EINVAL : 0;
}

int mr_reload_now(mr_server *srv, const char *why) {
  if (!srv->bridge)
    return MR_ELUA;
  /* Remember the content being loaded whatever the outcome, so that the
   * watcher does not load it again (a broken save is reported once, and
   * the next real change is tried again). */
  if (locate(srv) == 0)
    refresh(srv, R.digest, &R.digest_len);
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
  int e = refresh(srv, md, &mdlen);
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

/* Whether an event for name in the watched directory w may change what
 * the watcher hashes or watches: the script, a Lua file, or a (new or
 * watched) directory. No name: the kernel did not say which file (e.g. a
 * queue overflow), so look anyway; the hash decides. */
static int relevant(const watch *w, const char *name) {
  if (!name)
    return 1;
  if (name[0] == '.')
    return !w->rel[0] && strcmp(name, R.base) == 0; /* editor swap files */
  if (ends_with_lua(name) || (!w->rel[0] && strcmp(name, R.base) == 0))
    return 1;
  char rel[REL_MAX], path[sizeof R.dir + REL_MAX + 2];
  if ((size_t)snprintf(rel, sizeof rel, "%s%s%s", w->rel, w->rel[0] ? "/" : "",
                       name) >= sizeof rel)
    return 0; /* deeper than any path the watcher keeps */
  for (unsigned i = 1; i < R.nwatches; i++)
    if (strcmp(R.watches[i]->rel, rel) == 0)
      return 1; /* a watched directory went away or was renamed */
  snprintf(path, sizeof path, "%s/%s", R.dir, rel);
  struct stat st;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void on_event(uv_fs_event_t *h, const char *filename, int events,
                     int status) {
  (void)events;
  mr_server *srv = h->data;
  const watch *w = (const watch *)h;
  if (status < 0) {
    mr_warn("watching %s%s%s: %s", R.dir, w->rel[0] ? "/" : "", w->rel,
            uv_strerror(status));
    return;
  }
  if (srv->shutting_down || !R.started || !relevant(w, filename))
    return;
  char name[sizeof R.changed];
  snprintf(name, sizeof name, "%s%s%s", w->rel, w->rel[0] ? "/" : "",
           filename ? filename : "?");
  if (R.nchanged++ == 0)
    snprintf(R.changed, sizeof R.changed, "%s", name);
  else if (filename && strcmp(name, R.changed) == 0)
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
  watch *root;
  r = watch_start(srv, "", &root);
  if (r != 0)
    return r;
  uv_timer_init(srv->loop, &R.timer);
  R.timer.data = srv;
  uv_unref((uv_handle_t *)&R.timer);
  R.watches[0] = root;
  R.nwatches = 1;
  R.started = 1;
  /* The subdirectories: scanned again, now that watches can be made. */
  refresh(srv, R.digest, &R.digest_len);
  if (R.nwatches > 1)
    mr_info("watching %s and %u subdirectories for changes to %s and *.lua",
            R.dir, R.nwatches - 1, R.base);
  else
    mr_info("watching %s for changes to %s and *.lua", R.dir, R.base);
  return 0;
}

void mr_reload_stop(mr_server *srv) {
  if (!R.started || R.srv != srv)
    return;
  R.started = 0;
  for (unsigned i = 0; i < R.nwatches; i++)
    watch_stop(R.watches[i]);
  R.nwatches = 0;
  if (!uv_is_closing((uv_handle_t *)&R.timer))
    uv_close((uv_handle_t *)&R.timer, NULL);
}
