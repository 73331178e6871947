// `queue.type: rabbitmq`: the settings it reads from the `queue:` section, and how it opens.
#include "rabbitmq_queue.hpp"

#include "tellonce/registry.hpp"

#include <fstream>
#include <sstream>

namespace tellonce {

QueueEngineType rabbitmq_queue_engine() {
  QueueEngineType type;
  type.name = "rabbitmq";
  type.summary = "RabbitMQ quorum queues (rabbitmq-c), shared by several broker nodes";
  type.parse = [](SettingsReader& s) -> AdapterSettings {
    auto settings = std::make_shared<RabbitQueueSettings>();
    settings->host = s.string("host", settings->host);
    if (settings->host.empty()) s.problem("host", "must not be empty");
    settings->port = static_cast<int>(s.integer("port", settings->port, 1, 65535));
    settings->vhost = s.string("vhost", settings->vhost);
    if (settings->vhost.empty()) s.problem("vhost", "must not be empty ('/' is RabbitMQ's default)");
    settings->user = s.string("user", settings->user);
    if (settings->user.empty()) s.problem("user", "must not be empty");
    if (s.has("password")) s.problem("password", "is not read from the config: put it in a file named by password_file");
    if (s.has("password_file")) {
      auto path = s.file_path("password_file", "");
      std::ifstream in(path);
      std::string line;
      if (!in || !std::getline(in, line) || line.empty())
        s.problem("password_file", "cannot read a password from '" + path + "' (its first line)");
      else
        settings->password = line;
    }
    settings->queue_prefix = s.string("queue_prefix", settings->queue_prefix);
    if (settings->queue_prefix.empty() || settings->queue_prefix.size() > 100 ||
        settings->queue_prefix.find_first_of(" \t\r\n") != std::string::npos)
      s.problem("queue_prefix", "must be 1-100 characters without spaces");
    settings->shards = static_cast<int>(s.integer("shards", settings->shards, 1, 256));
    settings->prefetch = static_cast<int>(s.integer("prefetch", settings->prefetch, 1, 65535));
    auto timeout = s.duration("connect_timeout", std::chrono::seconds(5));
    if (timeout < std::chrono::seconds(1) || timeout > std::chrono::minutes(5))
      s.problem("connect_timeout", "must be between 1s and 5m");
    else
      settings->connect_timeout = std::chrono::duration_cast<std::chrono::seconds>(timeout);
    return settings;
  };
  type.create = [](const AdapterSettings& s, const QueueContext& ctx) -> std::unique_ptr<Queue> {
    return make_rabbitmq_queue(settings_as<RabbitQueueSettings>(s), ctx.executor);
  };
  return type;
}

}  // namespace tellonce
