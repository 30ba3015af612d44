// SPDX-License-Identifier: GPL-3.0-or-later
// Debugging aid: gives every thread an alternate signal stack, so that tqstudio's crash handler
// (app/crash_trace.h) can print the call stack of a thread that overflowed its own stack.
//   gcc -O2 -shared -fPIC -o altstack.so tools/altstack_preload.c -ldl -lpthread
//   LD_PRELOAD=$PWD/altstack.so tqstudio ...
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct start {
  void* (*fn)(void*);
  void* arg;
};

static void* trampoline(void* p) {
  struct start s = *(struct start*)p;
  free(p);
  stack_t ss;
  ss.ss_size = 256 * 1024;
  ss.ss_sp = malloc(ss.ss_size);
  ss.ss_flags = 0;
  if (ss.ss_sp) sigaltstack(&ss, NULL);
  return s.fn(s.arg);
}

int pthread_create(pthread_t* t, const pthread_attr_t* attr, void* (*fn)(void*), void* arg) {
  static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*) = NULL;
  if (!real) real = (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
  struct start* s = malloc(sizeof *s);
  if (!s) return real(t, attr, fn, arg);
  s->fn = fn;
  s->arg = arg;
  return real(t, attr, trampoline, s);
}
