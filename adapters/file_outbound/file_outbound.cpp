#include "file_outbound.hpp"

#include "batch_outbound.hpp"
#include "durable_file.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <stdexcept>
#include <variant>
#include <unistd.h>

namespace tellonce {
namespace {

using file_outbound::write_file_durably;

std::string extension_for(const std::string& content_type) {
  return content_type.find("json") != std::string::npos ? ".json" : ".dat";
}

// Runs on the writer thread.
DeliveryResult write_durably(const FileOutboundSettings& s, const std::string& message_id,
                             const std::string& content_type, const std::string& body) {
  if (auto failed = write_file_durably(s.directory, ".partial-" + message_id,
                                       message_id + extension_for(content_type), body, s.fsync))
    return *failed;
  DeliveryResult ok;
  ok.outcome = DeliveryOutcome::ok;
  ok.partner_code = "file written";
  return ok;
}

class FileOutbound final : public OutboundAdapter {
 public:
  explicit FileOutbound(FileOutboundSettings settings) : settings_(std::move(settings)) {}
  ~FileOutbound() override { writer_.join(); }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    // The job outlives this call, but the writer thread gets its own copies so the contract
    // does not depend on it.
    auto initiation = [this](auto handler, std::string id, std::string type, std::string body) {
      auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
      asio::post(writer_, [this, handler = std::move(handler), guard = std::move(guard), id = std::move(id),
                           type = std::move(type), body = std::move(body)]() mutable {
        DeliveryResult result = write_durably(settings_, id, type, body);
        auto ex = guard.get_executor();
        asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
          std::move(handler)(std::move(result));
        });
        guard.reset();
      });
    };
    auto written = asio::async_initiate<const asio::use_awaitable_t<>, void(DeliveryResult)>(
        initiation, asio::use_awaitable, job.message_id, job.content_type, job.body);
    co_return co_await std::move(written);
  }

  std::string describe() const override { return "file into " + settings_.directory.string(); }

  // stop() is the default no-op: a write in progress takes milliseconds and completes; the
  // destructor waits for it.

 private:
  FileOutboundSettings settings_;
  asio::thread_pool writer_{1};
};

// The CSV mapping with its paths parsed; the first bad path's message in `problem`.
file_outbound::CsvMapping compile_mapping(const FileOutboundSettings& s, std::string* problem) {
  file_outbound::CsvMapping mapping;
  mapping.resource_type = s.csv_resource_type;
  for (const auto& column : s.csv_columns) {
    auto parsed = file_outbound::parse_csv_path(column.path);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      if (problem && problem->empty()) *problem = "column '" + column.header + "': " + *why;
      continue;
    }
    mapping.columns.push_back({column.header, std::get<file_outbound::CsvPath>(std::move(parsed))});
  }
  return mapping;
}

AdapterSettings parse_settings(SettingsReader& reader) {
  auto s = std::make_shared<FileOutboundSettings>();
  s->directory = reader.required_string("directory");
  s->fsync = reader.boolean("fsync", s->fsync);
  if (!s->directory.empty() && !std::filesystem::is_directory(s->directory))
    reader.problem("directory", "'" + s->directory.string() + "' is not a folder (create it first)");
  else if (!s->directory.empty() && ::access(s->directory.c_str(), W_OK) != 0)
    reader.problem("directory", "the broker may not write into '" + s->directory.string() + "'");

  const auto format = reader.string("format", "json-per-record");
  if (format == "ndjson") s->format = FileOutboundFormat::ndjson;
  else if (format == "csv") s->format = FileOutboundFormat::csv;
  else if (format != "json-per-record")
    reader.problem("format", "'" + format + "' is not a format: json-per-record (the default), ndjson or csv");
  const bool batched = s->format != FileOutboundFormat::json_per_record;
  for (const char* key : {"batch_max_records", "batch_max_wait"})
    if (!batched && reader.has(key)) reader.problem(key, "applies to format ndjson or csv only");
  s->batch_max_records = static_cast<std::size_t>(reader.integer("batch_max_records", 500, 1, 100000));
  s->batch_max_wait = reader.duration("batch_max_wait", s->batch_max_wait);
  if (s->batch_max_wait <= std::chrono::milliseconds(0) || s->batch_max_wait > std::chrono::hours(1))
    reader.problem("batch_max_wait", "must be more than 0 and at most 1h");

  if (auto csv = reader.child("csv")) {
    if (s->format != FileOutboundFormat::csv) reader.problem("csv", "a CSV mapping needs format: csv");
    s->csv_resource_type = csv->required_string("resource_type");
    auto columns = csv->sequence("columns");
    if (columns.empty()) csv->problem("columns", "list at least one column: { header: ..., path: ... }");
    for (auto& column : columns) {
      CsvColumn c{column.required_string("header"), column.required_string("path")};
      if (!c.path.empty()) {
        auto parsed = file_outbound::parse_csv_path(c.path);
        if (auto* why = std::get_if<std::string>(&parsed)) column.problem("path", *why);
      }
      column.finish();
      s->csv_columns.push_back(std::move(c));
    }
    csv->finish();
  } else if (s->format == FileOutboundFormat::csv) {
    reader.problem("csv", "format csv needs a csv mapping: resource_type and columns");
  }
  reader.finish();
  return s;
}

}  // namespace

std::unique_ptr<OutboundAdapter> make_file_outbound(const FileOutboundSettings& settings) {
  if (settings.format == FileOutboundFormat::json_per_record) return std::make_unique<FileOutbound>(settings);
  std::string problem;
  auto mapping = compile_mapping(settings, &problem);
  if (!problem.empty()) throw std::invalid_argument("file outbound csv mapping: " + problem);
  return file_outbound::make_batch_outbound(settings, std::move(mapping));
}

OutboundAdapterType file_outbound_type() {
  OutboundAdapterType type;
  type.name = "file";
  type.summary = "writes records into the partner's outbox folder, durably: one file each, or NDJSON/CSV batches with a manifest";
  type.parse = &parse_settings;
  type.create = [](const AdapterSettings& settings, OutboundContext&) -> std::unique_ptr<OutboundAdapter> {
    return make_file_outbound(settings_as<FileOutboundSettings>(settings));
  };
  return type;
}

}  // namespace tellonce
