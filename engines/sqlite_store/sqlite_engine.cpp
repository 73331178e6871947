// `store.type: sqlite`: the settings it reads from the `store:` section, and how it opens.
#include "sqlite_store.hpp"

#include "tellonce/registry.hpp"

#include <filesystem>

namespace tellonce {

StoreEngineType sqlite_store_engine() {
  StoreEngineType type;
  type.name = "sqlite";
  type.summary = "SQLite in WAL mode on a local disk, with group commit";
  type.parse = [](SettingsReader& s) -> AdapterSettings {
    auto settings = std::make_shared<SqliteStoreSettings>();
    settings->path = s.file_path("path", "data/tellonce.db");
    auto delay = s.duration("max_commit_delay",
                            std::chrono::duration_cast<std::chrono::milliseconds>(settings->max_commit_delay));
    if (delay > std::chrono::seconds(1)) s.problem("max_commit_delay", "must be at most 1s");
    else settings->max_commit_delay = delay;
    settings->max_batch = static_cast<int>(s.integer("max_batch", settings->max_batch, 1, 100000));
    settings->max_size_bytes = s.byte_size("max_size", settings->max_size_bytes, 0, std::uint64_t{1} << 50);
    return settings;
  };
  type.create = [](const AdapterSettings& s, const StoreStartup& startup) -> std::unique_ptr<Store> {
    auto settings = settings_as<SqliteStoreSettings>(s);
    settings.accept_new_store = startup.accept_new_store;
    settings.accept_wal_loss = startup.accept_wal_loss;
    const auto folder = settings.path.parent_path();
    std::filesystem::create_directories(folder.empty() ? std::filesystem::path(".") : folder);
    return make_sqlite_store(settings);
  };
  return type;
}

}  // namespace tellonce
