// The Catch2 main, built once per configuration as a static library and linked into every test.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <csignal>

int main(int argc, char* argv[]) {
  std::signal(SIGPIPE, SIG_IGN);  // tests that use sockets must see EPIPE, not die of it
  return Catch::Session().run(argc, argv);
}
