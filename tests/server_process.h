// Runs the real `stepdb` binary as a child process on free loopback ports,
// for end-to-end tests.
#ifndef STEPDB_TESTS_SERVER_PROCESS_H_
#define STEPDB_TESTS_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace stepdb::testing {

// Directory of the running test binary; the server and stepctl are built
// next to it.
inline std::string BinaryDir() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
}

class ServerProcess {
 public:
  ServerProcess(std::string data_dir, std::vector<std::string> extra_flags = {})
      : data_dir_(std::move(data_dir)), extra_flags_(std::move(extra_flags)) {}
  ~ServerProcess() {
    if (pid_ > 0) Kill(SIGKILL);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server and waits for its ready line. Returns false on failure.
  bool Start() {
    int out[2];
    if (pipe(out) != 0) return false;
    std::vector<std::string> args = {BinaryDir() + "/stepdb", "--data", data_dir_,
                                     "--listen", "127.0.0.1:0", "--http",
                                     "127.0.0.1:0"};
    args.insert(args.end(), extra_flags_.begin(), extra_flags_.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[1024];
    while (fgets(line, sizeof line, stdout_) != nullptr) {
      ready_line_ = line;
      int grpc_port = 0, http_port = 0;
      if (sscanf(line, "stepdb ready: grpc=127.0.0.1:%d http=127.0.0.1:%d",
                 &grpc_port, &http_port) == 2) {
        grpc_port_ = grpc_port;
        http_port_ = http_port;
        return true;
      }
    }
    return false;
  }

  // Sends `signal` and waits for the exit. Returns the wait status.
  int Kill(int signal) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (stdout_ != nullptr) {
      char line[1024];
      while (fgets(line, sizeof line, stdout_) != nullptr) rest_ += line;
      fclose(stdout_);
      stdout_ = nullptr;
    }
    return status;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int http_port() const { return http_port_; }
  const std::string& output_after_ready() const { return rest_; }

 private:
  const std::string data_dir_;
  const std::vector<std::string> extra_flags_;
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
  std::string ready_line_;
  std::string rest_;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

}  // namespace stepdb::testing

#endif  // STEPDB_TESTS_SERVER_PROCESS_H_
