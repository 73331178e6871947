// Test support: a fresh temporary directory, removed with its contents when the object goes
// (kept when TELLONCE_KEEP_TEST_DIRS is set, to look at after a failure). Not thread-safe;
// one per test.
#pragma once

#include <filesystem>
#include <string>

namespace tellonce::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tellonce-test");  // throws if it cannot create one
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace tellonce::test
