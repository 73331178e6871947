// A scratch directory of config files for one test, removed afterwards.
#pragma once

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace tellonce::test {

class ConfigFiles {
 public:
  const std::filesystem::path& dir() const { return dir_; }

  std::filesystem::path write(const std::string& relative, const std::string& text) {
    auto path = dir_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    return path;
  }

 private:
  TempDir temp_{"tellonce-config"};
  std::filesystem::path dir_ = temp_.path();
};

}  // namespace tellonce::test
