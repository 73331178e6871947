// The seam between the config loader and adapter and engine types, owned by config so that config never
// includes adapters (adapters include this). An adapter type's parse() turns its section into
// its own settings struct, held as AdapterSettings; the loader finds parsers through an
// AdapterCatalog (AdapterRegistry is the one the broker uses).
//
// Threading: none; all of this runs at start-up or in check-config. Errors: reading settings
// as a type other than the one stored throws std::logic_error naming both (a wiring bug, not
// a config problem: config problems go through SettingsReader::problem).
#pragma once

#include "tellonce/settings_reader.hpp"

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

namespace tellonce {

// Immutable settings of one adapter instance, of a type fixed by the adapter's parse().
// Copies share the same settings.
class AdapterSettings {
 public:
  AdapterSettings() = default;
  template <class T>
  AdapterSettings(std::shared_ptr<T> settings)  // NOLINT: implicit, so parse() can return make_shared<T>
      : value_(std::move(settings)), type_(value_ ? &typeid(T) : nullptr) {}

  explicit operator bool() const { return value_ != nullptr; }
  template <class T>
  bool holds() const {
    return type_ && *type_ == typeid(T);
  }
  // The settings as T; throws std::logic_error when they are empty or of another type.
  template <class T>
  const T& as() const {
    if (!holds<T>())
      throw std::logic_error(std::string("adapter settings read as ") + typeid(T).name() + " but hold " +
                             (type_ ? type_->name() : "nothing"));
    return *static_cast<const T*>(value_.get());
  }

 private:
  std::shared_ptr<const void> value_;
  const std::type_info* type_ = nullptr;
};

template <class Settings>
const Settings& settings_as(const AdapterSettings& s) {
  return s.template as<Settings>();
}

// What the loader needs of an adapter type. parse() reads its section through the reader,
// reports bad values with SettingsReader::problem (declaring its listeners and partner
// references there too), and need not call finish(): the loader does.
using AdapterSettingsParser = std::function<AdapterSettings(SettingsReader&)>;

class AdapterCatalog {
 public:
  virtual ~AdapterCatalog() = default;
  // nullptr when no such type is registered.
  virtual const AdapterSettingsParser* inbound_parser(const std::string& type) const = 0;
  virtual const AdapterSettingsParser* outbound_parser(const std::string& type) const = 0;
  virtual std::vector<std::string> inbound_names() const = 0;
  virtual std::vector<std::string> outbound_names() const = 0;
  // The engines behind the Store and Queue seams, by `store.type` / `queue.type`.
  virtual const AdapterSettingsParser* store_parser(const std::string& type) const = 0;
  virtual const AdapterSettingsParser* queue_parser(const std::string& type) const = 0;
  virtual std::vector<std::string> store_names() const = 0;
  virtual std::vector<std::string> queue_names() const = 0;
};

}  // namespace tellonce
