#ifndef STEPDB_STORAGE_THREAD_NAME_H_
#define STEPDB_STORAGE_THREAD_NAME_H_

#include <pthread.h>

namespace stepdb::storage {

// Names the calling thread (at most 15 characters on Linux) so that
// `top -H`, perf and gdb tell the server's threads apart. Best effort.
inline void NameThisThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

}  // namespace stepdb::storage

#endif  // STEPDB_STORAGE_THREAD_NAME_H_
