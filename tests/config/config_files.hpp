// A scratch directory of config files for one test, removed afterwards.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace tellonce::testing {

class ConfigFiles {
 public:
  ConfigFiles() {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() / ("tellonce-config-test-" + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
  }
  ~ConfigFiles() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ConfigFiles(const ConfigFiles&) = delete;
  ConfigFiles& operator=(const ConfigFiles&) = delete;

  const std::filesystem::path& dir() const { return dir_; }

  std::filesystem::path write(const std::string& relative, const std::string& text) {
    auto path = dir_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    return path;
  }

 private:
  std::filesystem::path dir_;
};

}  // namespace tellonce::testing
