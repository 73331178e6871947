// The PartnerDirectory the broker runs with: the partners of the loaded configuration.
#pragma once

#include "tellonce/adapter.hpp"

#include <memory>

namespace tellonce {

struct Config;

// `config` must outlive the directory. Thread-safe for reads.
std::unique_ptr<PartnerDirectory> make_partner_directory(const Config& config);

}  // namespace tellonce
