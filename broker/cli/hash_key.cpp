// `tellonce hash-key`: reads one API key from stdin and prints what the config stores for it
// (a partner's `api_key_hashes`). The key is never echoed or written anywhere else.
#include "broker/cli/commands.hpp"

#include "tellonce/tls.hpp"

#include <iostream>
#include <string>

namespace tellonce {

int run_hash_key_command(int argc, char** argv) {
  (void)argv;
  if (argc != 0) {
    std::cerr << "usage: tellonce hash-key < KEYFILE   (or: printf %s KEY | tellonce hash-key)\n";
    return 2;
  }
  std::string key;
  std::getline(std::cin, key);
  if (!key.empty() && key.back() == '\r') key.pop_back();  // a key typed or saved on Windows
  if (key.empty()) {
    std::cerr << "tellonce hash-key: no key on stdin\n";
    return 1;
  }
  if (key.size() < 32)
    std::cerr << "tellonce hash-key: warning: a key of " << key.size()
              << " characters is guessable; make one with `openssl rand -base64 32`\n";
  std::cout << api_key_hash(key) << "\n";
  return 0;
}

}  // namespace tellonce
