/* A stand-in for libFuzzer's main, so every fuzz target also runs in ctest
 * on any compiler: it feeds the target seeds, random bytes and random
 * mutations of the seeds, from a fixed PRNG seed, for a bounded number of
 * inputs. With clang, -DMOONROOM_FUZZ=ON builds the same targets against
 * libFuzzer for open-ended, coverage-guided runs.
 *
 * Usage: fuzz_NAME [RUNS [CORPUS_DIR [DICT]]]. The seeds are the target's
 * table plus every file in CORPUS_DIR (tests/fuzz/corpus/NAME by default),
 * and mutations also insert the tokens of DICT (tests/fuzz/dict/NAME.dict,
 * libFuzzer's format): the same files libFuzzer is given. A corpus or a
 * dictionary that cannot be read, is empty or has a malformed line is a
 * failure, so a run never silently loses its seeds. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each target provides seed inputs, valid messages to mutate (fuzz_seeds). */
#include "fuzz_target.h"

static uint64_t state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void) {
  /* xorshift64*: good enough to spread inputs, and repeatable. */
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 2685821657736338717ull;
}

#define FUZZ_MAX_INPUT 65536
#define MAX_SEEDS 256
#define MAX_TOKENS 256
#define MAX_TOKEN 64

/* The seeds in use: the target's table, then the corpus files. Corpus
 * bytes are owned by this table and live until exit. */
static fuzz_seed seeds[MAX_SEEDS];
static size_t nseeds;
static size_t ncorpus;

static struct {
  uint8_t bytes[MAX_TOKEN];
  size_t len;
} tokens[MAX_TOKENS];
static size_t ntokens;

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds every regular file in dir, in name order, so that runs repeat.
 * Returns the number added, or -1 on an error (printed). */
static int load_corpus(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "fuzz: cannot open corpus %s\n", dir);
    return -1;
  }
  char *names[MAX_SEEDS];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < MAX_SEEDS)
    if (e->d_name[0] != '.')
      names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  int added = 0, bad = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    char *data = malloc(FUZZ_MAX_INPUT);
    size_t len = 0;
    if (f && data) {
      len = fread(data, 1, FUZZ_MAX_INPUT, f);
      if (nseeds < MAX_SEEDS) {
        seeds[nseeds].data = data;
        seeds[nseeds++].len = len;
        added++;
        data = NULL;
      }
    } else {
      fprintf(stderr, "fuzz: cannot read %s\n", path);
      bad = 1;
    }
    if (f)
      fclose(f);
    free(data);
    free(names[i]);
  }
  return bad ? -1 : added;
}

/* Reads one dictionary value: the text between the quotes, with \\, \"
 * and \xNN escapes as libFuzzer reads them. Returns 0, or -1 when the
 * value is malformed. */
static int parse_token(const char *q, uint8_t *out, size_t *len) {
  size_t n = 0;
  for (; *q && *q != '"'; q++) {
    int c = (unsigned char)*q;
    if (c == '\\') {
      q++;
      if (*q == 'x' && q[1] && q[2]) {
        char hex[3] = {q[1], q[2], 0};
        char *end;
        c = (int)strtol(hex, &end, 16);
        if (*end)
          return -1;
        q += 2;
      } else if (*q == '\\' || *q == '"') {
        c = (unsigned char)*q;
      } else {
        return -1;
      }
    }
    if (n == MAX_TOKEN)
      return -1;
    out[n++] = (uint8_t)c;
  }
  if (*q != '"' || n == 0)
    return -1;
  *len = n;
  return 0;
}

/* Reads a libFuzzer dictionary: lines NAME="VALUE", blank lines and
 * # comments. Returns the number of tokens, or -1 on an error (printed). */
static int load_dict(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) {
    fprintf(stderr, "fuzz: cannot open dictionary %s\n", file);
    return -1;
  }
  char line[512];
  int lineno = 0, bad = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *p = line + strspn(line, " \t");
    if (*p == '#' || *p == '\n' || *p == '\0')
      continue;
    char *q = strchr(p, '"');
    if (!q || ntokens == MAX_TOKENS ||
        parse_token(q + 1, tokens[ntokens].bytes, &tokens[ntokens].len) != 0) {
      fprintf(stderr, "fuzz: %s:%d: not NAME=\"VALUE\"\n", file, lineno);
      bad = 1;
      continue;
    }
    ntokens++;
  }
  fclose(f);
  return bad ? -1 : (int)ntokens;
}

int main(int argc, char **argv) {
  long runs = argc > 1 ? atol(argv[1]) : 200000;
  const char *corpus = argc > 2 ? argv[2] : FUZZ_CORPUS_DIR;
  const char *dict = argc > 3 ? argv[3] : FUZZ_DICT;
  for (size_t i = 0; i < fuzz_nseeds && nseeds < MAX_SEEDS; i++)
    seeds[nseeds++] = fuzz_seeds[i];
  int nc = load_corpus(corpus);
  int nd = load_dict(dict);
  if (nc <= 0 || nd <= 0) {
    fprintf(stderr,
            "fuzz: need a readable, non-empty corpus and dictionary "
            "(corpus %s, dictionary %s)\n",
            corpus, dict);
    return 1;
  }
  ncorpus = (size_t)nc;
  printf("%zu corpus seeds from %s, %zu dictionary tokens from %s\n", ncorpus,
         corpus, ntokens, dict);
  uint8_t *buf = malloc(FUZZ_MAX_INPUT + 4096);
  if (!buf)
    return 1;
  for (size_t i = 0; i < nseeds; i++)
    LLVMFuzzerTestOneInput((const uint8_t *)seeds[i].data, seeds[i].len);
  for (long r = 0; r < runs; r++) {
    size_t n;
    uint64_t kind = next_random() % 4;
    if (kind == 0) {
      n = next_random() % 512;
      for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)next_random();
    } else {
      /* A seed with a few bytes flipped, inserted, cut or truncated, or a
       * dictionary token written over it or inserted into it. */
      size_t s = next_random() % nseeds;
      n = seeds[s].len;
      memcpy(buf, seeds[s].data, n);
      int edits = 1 + (int)(next_random() % 4);
      for (int e = 0; e < edits && n > 0; e++) {
        size_t at = next_random() % n;
        size_t t = next_random() % ntokens;
        size_t tlen = tokens[t].len;
        switch (next_random() % 6) {
        case 4:
          if (n + tlen < FUZZ_MAX_INPUT) {
            memmove(buf + at + tlen, buf + at, n - at);
            memcpy(buf + at, tokens[t].bytes, tlen);
            n += tlen;
          }
          break;
        case 5:
          if (at + tlen <= n)
            memcpy(buf + at, tokens[t].bytes, tlen);
          break;
        case 0:
          buf[at] = (uint8_t)next_random();
          break;
        case 1:
          buf[at] ^= (uint8_t)(1u << (next_random() % 8));
          break;
        case 2:
          n = at; /* truncate */
          break;
        default:
          if (n < FUZZ_MAX_INPUT) {
            memmove(buf + at + 1, buf + at, n - at);
            buf[at] = (uint8_t)next_random();
            n++;
          }
        }
      }
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  free(buf);
  printf("%ld passed, 0 failed\n", runs + (long)nseeds);
  return 0;
}
