// `store.type: postgresql`: the settings it reads from the `store:` section, and how it opens.
#include "postgres_store.hpp"

#include "tellonce/registry.hpp"

namespace tellonce {

namespace {

// libpq's key=value syntax: a value with spaces or quotes is single-quoted, backslash-escaped.
std::string conninfo_value(const std::string& v) {
  if (!v.empty() && v.find_first_of(" '\\") == std::string::npos) return v;
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

StoreEngineType postgres_store_engine() {
  StoreEngineType type;
  type.name = "postgresql";
  type.summary = "PostgreSQL (libpq), shared by several broker nodes, with group commit";
  type.parse = [](SettingsReader& s) -> AdapterSettings {
    auto settings = std::make_shared<PostgresStoreSettings>();
    const bool parts = s.has("host") || s.has("port") || s.has("dbname") || s.has("user");
    if (s.has("conninfo")) {
      if (parts) s.problem("conninfo", "give either conninfo or host/port/dbname/user, not both");
      settings->conninfo = s.required_string("conninfo");
      if (settings->conninfo.empty()) s.problem("conninfo", "must not be empty");
      if (settings->conninfo.find("password") != std::string::npos)
        s.problem("conninfo", "must not hold a password: put it in ~/.pgpass (or PGPASSFILE)");
    } else {
      const auto host = s.string("host", "127.0.0.1");
      const auto port = s.integer("port", 5432, 1, 65535);
      const auto dbname = s.string("dbname", "tellonce");
      const auto user = s.string("user", "tellonce");
      if (host.empty()) s.problem("host", "must not be empty");
      if (dbname.empty()) s.problem("dbname", "must not be empty");
      if (user.empty()) s.problem("user", "must not be empty");
      settings->conninfo = "host=" + conninfo_value(host) + " port=" + std::to_string(port) +
                           " dbname=" + conninfo_value(dbname) + " user=" + conninfo_value(user);
    }
    settings->pool_size = static_cast<int>(s.integer("pool_size", settings->pool_size, 1, 64));
    auto delay = s.duration("max_commit_delay",
                            std::chrono::duration_cast<std::chrono::milliseconds>(settings->max_commit_delay));
    if (delay > std::chrono::seconds(1)) s.problem("max_commit_delay", "must be at most 1s");
    else settings->max_commit_delay = delay;
    settings->max_batch = static_cast<int>(s.integer("max_batch", settings->max_batch, 1, 100000));
    auto timeout = s.duration("connect_timeout", std::chrono::seconds(5));
    if (timeout < std::chrono::seconds(1) || timeout > std::chrono::minutes(5))
      s.problem("connect_timeout", "must be between 1s and 5m");
    else settings->connect_timeout = std::chrono::duration_cast<std::chrono::seconds>(timeout);
    return settings;
  };
  type.create = [](const AdapterSettings& s, const StoreStartup&) -> std::unique_ptr<Store> {
    return make_postgres_store(settings_as<PostgresStoreSettings>(s));
  };
  return type;
}

}  // namespace tellonce
