// broker/metrics: the metric types, their Prometheus text, the flow recorder and the
// scrape-time gauges read from the Store.
#include "broker/metrics/broker_metrics.hpp"
#include "broker/metrics/flow.hpp"
#include "broker/metrics/registry.hpp"
#include "support/io_thread.hpp"
#include "support/loopback_client.hpp"
#include "support/null_store.hpp"
#include "support/run_async.hpp"
#include "tellonce/log.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

namespace tellonce {
namespace {

using metrics::Registry;

std::string line_of(const std::string& text, const std::string& prefix) {
  for (std::size_t at = 0; at < text.size();) {
    auto end = text.find('\n', at);
    auto line = text.substr(at, end - at);
    if (line.starts_with(prefix)) return line;
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return {};
}

TEST(MetricsRegistry, CountersRenderWithHelpTypeAndLabelsInOrder) {
  Registry r;
  auto& c = r.counter("t_records_total", "Records.", {"channel", "partner"});
  c.with({"fhir", "rtx"}).inc();
  c.with({"fhir", "rtx"}).inc(2);
  c.with({"csv", "vcse"}).inc();
  const auto text = r.render();
  EXPECT_NE(text.find("# HELP t_records_total Records.\n# TYPE t_records_total counter\n"), std::string::npos) << text;
  EXPECT_EQ(line_of(text, "t_records_total{channel=\"fhir\""), "t_records_total{channel=\"fhir\",partner=\"rtx\"} 3");
  EXPECT_EQ(line_of(text, "t_records_total{channel=\"csv\""), "t_records_total{channel=\"csv\",partner=\"vcse\"} 1");
}

TEST(MetricsRegistry, LabelValuesAndHelpAreEscaped) {
  Registry r;
  r.gauge("t_gauge", "Line one\nback\\slash", {"name"}).with({"a\"b\\c\nd"}).set(1.5);
  const auto text = r.render();
  EXPECT_NE(text.find("# HELP t_gauge Line one\\nback\\\\slash\n"), std::string::npos) << text;
  EXPECT_EQ(line_of(text, "t_gauge{"), "t_gauge{name=\"a\\\"b\\\\c\\nd\"} 1.5");
}

TEST(MetricsRegistry, NumbersAreWrittenAsPrometheusReadsThem) {
  std::string out;
  metrics::append_number(out, 0.25);
  out += ' ';
  metrics::append_number(out, 1e21);
  out += ' ';
  metrics::append_number(out, std::numeric_limits<double>::infinity());
  out += ' ';
  metrics::append_number(out, std::nan(""));
  EXPECT_EQ(out, "0.25 1e+21 +Inf NaN");
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithSumAndCount) {
  Registry r;
  auto& h = r.histogram("t_latency_seconds", "Latency.", {"channel"}, {0.1, 1});
  auto& child = h.with({"fhir"});
  child.observe(0.05);
  child.observe(0.1);  // on the bound: counts in that bucket (le)
  child.observe(0.5);
  child.observe(7);
  const auto text = r.render();
  EXPECT_EQ(line_of(text, "t_latency_seconds_bucket{channel=\"fhir\",le=\"0.1\"}"),
            "t_latency_seconds_bucket{channel=\"fhir\",le=\"0.1\"} 2");
  EXPECT_EQ(line_of(text, "t_latency_seconds_bucket{channel=\"fhir\",le=\"1\"}"),
            "t_latency_seconds_bucket{channel=\"fhir\",le=\"1\"} 3");
  EXPECT_EQ(line_of(text, "t_latency_seconds_bucket{channel=\"fhir\",le=\"+Inf\"}"),
            "t_latency_seconds_bucket{channel=\"fhir\",le=\"+Inf\"} 4");
  EXPECT_EQ(line_of(text, "t_latency_seconds_sum"), "t_latency_seconds_sum{channel=\"fhir\"} 7.65");
  EXPECT_EQ(line_of(text, "t_latency_seconds_count"), "t_latency_seconds_count{channel=\"fhir\"} 4");
  EXPECT_NE(text.find("# TYPE t_latency_seconds histogram\n"), std::string::npos);
}

TEST(MetricsRegistry, AFamilyWithoutLabelsRendersItsOneValueBare) {
  Registry r;
  r.gauge("t_bytes", "Bytes.", {}).with({}).set(4096);
  EXPECT_EQ(line_of(r.render(), "t_bytes "), "t_bytes 4096");
}

TEST(MetricsRegistry, NewLabelSetsPastTheCapShareOneOverflowChild) {
  Registry r;
  auto& c = r.counter("t_capped_total", "Capped.", {"resource_type"}, 2);
  c.with({"Patient"}).inc();
  c.with({"Observation"}).inc();
  c.with({"Made1"}).inc();
  c.with({"Made2"}).inc();
  c.with({"Patient"}).inc();  // an existing one still counts as itself
  const auto text = r.render();
  EXPECT_EQ(line_of(text, "t_capped_total{resource_type=\"Patient\"}"), "t_capped_total{resource_type=\"Patient\"} 2");
  EXPECT_EQ(line_of(text, "t_capped_total{resource_type=\"overflow\"}"),
            "t_capped_total{resource_type=\"overflow\"} 2");
  EXPECT_EQ(line_of(text, "t_capped_total{resource_type=\"Made"), "");
}

std::string label_for(int thread) {
  std::string label = "p";
  label += std::to_string(thread);  // (not "p" + ...: g++ 12 warns falsely, -Wrestrict)
  return label;
}

// Many threads on the same and on different label sets: no count is lost (each thread's
// cached lookup reaches the one shared child).
TEST(MetricsRegistry, CountsFromManyThreadsAllArrive) {
  Registry r;
  auto& c = r.counter("t_total", "T.", {"channel", "partner"});
  constexpr int threads = 4, per_thread = 20000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const std::string mine = label_for(t);
      for (int i = 0; i < per_thread; ++i) {
        c.with({"shared", "all"}).inc();
        c.with({"own", mine}).inc();
      }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(c.with({"shared", "all"}).value(), static_cast<std::uint64_t>(threads * per_thread));
  for (int t = 0; t < threads; ++t) EXPECT_EQ(c.with({"own", label_for(t)}).value(), std::uint64_t{per_thread});
}

TEST(MinuteCounts, KeepsEachMinuteApartAndForgetsOnesTooOld) {
  metrics::MinuteCounts counts;
  counts.add(1000);
  counts.add(1000, 2);
  counts.add(1001);
  EXPECT_EQ(counts.at(1000), 3u);
  EXPECT_EQ(counts.at(1001), 1u);
  EXPECT_EQ(counts.at(999), 0u);
  counts.add(1000 + metrics::MinuteCounts::slots);  // same slot, a later minute: the old count goes
  EXPECT_EQ(counts.at(1000), 0u);
  EXPECT_EQ(counts.at(1000 + metrics::MinuteCounts::slots), 1u);
  counts.add(1000);  // too late for a slot now holding a later minute: not counted there
  EXPECT_EQ(counts.at(1000 + metrics::MinuteCounts::slots), 1u);
}

TEST(FlowRecorder, JsonHasFifteenMinutesPerChannelAndDestinationAndTheTopReasons) {
  metrics::FlowRecorder flow;
  const std::int64_t now = 1'764'547'230'000;  // 30 s into a minute
  const std::int64_t minute = now / 60'000 * 60'000;
  flow.record_in("fhir-http", true, now);
  flow.record_in("fhir-http", true, now - 60'000);
  flow.record_in("fhir-http", false, now);
  flow.record_in("fhir-http", true, now - 15 * 60'000);  // outside the window
  flow.record_out("gp-a", true, now);
  flow.record_out("gp-a", false, now - 14 * 60'000);
  for (int i = 0; i < 3; ++i) flow.record_rejection_reason("uk-nhs-number", now);
  flow.record_rejection_reason("json", now);
  for (const char* r : {"a", "b", "c", "d"}) flow.record_rejection_reason(r, now - 60'000);

  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(flow.json(now).c_str()).HasParseError());
  const auto& starts = doc["minuteStarts"];
  ASSERT_EQ(starts.Size(), 15u);
  EXPECT_EQ(starts[14].GetInt64(), minute);
  EXPECT_EQ(starts[0].GetInt64(), minute - 14 * 60'000);
  const auto& in = doc["in"]["fhir-http"];
  ASSERT_EQ(in["accepted"].Size(), 15u);
  EXPECT_EQ(in["accepted"][14].GetUint64(), 1u);
  EXPECT_EQ(in["accepted"][13].GetUint64(), 1u);
  EXPECT_EQ(in["rejected"][14].GetUint64(), 1u);
  std::uint64_t accepted_total = 0;
  for (const auto& v : in["accepted"].GetArray()) accepted_total += v.GetUint64();
  EXPECT_EQ(accepted_total, 2u);
  const auto& out = doc["out"]["gp-a"];
  EXPECT_EQ(out["delivered"][14].GetUint64(), 1u);
  EXPECT_EQ(out["failed"][0].GetUint64(), 1u);
  const auto& top = doc["topRejections"];
  ASSERT_EQ(top.Size(), 5u);  // at most five of the six
  EXPECT_STREQ(top[0]["reason"].GetString(), "uk-nhs-number");
  EXPECT_EQ(top[0]["count"].GetUint64(), 3u);
}

TEST(MessageIdTime, ReadsTheTimeANewIdWasMadeAt) {
  const auto before = now_ms();
  const auto id = new_message_id();
  const auto after = now_ms();
  EXPECT_GE(message_id_time_ms(id), before);
  EXPECT_LE(message_id_time_ms(id), after);
  EXPECT_EQ(message_id_time_ms("not-an-id!"), 0);
  EXPECT_EQ(message_id_time_ms("short"), 0);
}

// A store whose backlog the test sets, counting how often it is asked.
class BacklogStore : public test::NullStore {
 public:
  asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() override {
    ++reads;
    co_return rows;
  }
  std::uint64_t size_bytes() const override { return 123456; }
  std::vector<DestinationBacklog> rows;
  int reads = 0;
};

double value_of(const std::string& text, const std::string& series) {
  auto line = line_of(text, series + " ");
  return line.empty() ? -1 : std::stod(line.substr(series.size() + 1));
}

TEST(BrokerMetrics, ScrapeReadsTheBacklogAtMostOncePerCachePeriodButAgesKeepGrowing) {
  BrokerMetrics m("1.2.3", {"gp-a", "gp-b"}, std::chrono::hours(1));
  BacklogStore store;
  const auto old = now_ms() - 120'000;
  store.rows = {DestinationBacklog{"gp-a", 7, old}};
  auto text = test::run_async(m.scrape(store));
  EXPECT_EQ(value_of(text, "tellonce_destination_queue_depth{destination=\"gp-a\"}"), 7);
  EXPECT_EQ(value_of(text, "tellonce_destination_queue_depth{destination=\"gp-b\"}"), 0);
  const double age = value_of(text, "tellonce_destination_oldest_undelivered_age_seconds{destination=\"gp-a\"}");
  EXPECT_GE(age, 120);
  EXPECT_LT(age, 180);
  EXPECT_EQ(value_of(text, "tellonce_destination_oldest_undelivered_age_seconds{destination=\"gp-b\"}"), 0);
  EXPECT_EQ(value_of(text, "tellonce_store_size_bytes"), 123456);
  EXPECT_EQ(value_of(text, "tellonce_build_info{version=\"1.2.3\"}"), 1);

  store.rows = {};
  for (int i = 0; i < 5; ++i) text = test::run_async(m.scrape(store));
  EXPECT_EQ(store.reads, 1);  // cached: the store was asked once
  EXPECT_EQ(value_of(text, "tellonce_destination_queue_depth{destination=\"gp-a\"}"), 7);
}

TEST(BrokerMetrics, AnExpiredCacheIsReadAgainAndEmptiedDestinationsGoToZero) {
  BrokerMetrics m("1", {"gp-a"}, std::chrono::milliseconds(0));
  BacklogStore store;
  store.rows = {DestinationBacklog{"gp-a", 3, now_ms() - 5000}};
  test::run_async(m.scrape(store));
  store.rows = {};
  auto text = test::run_async(m.scrape(store));
  EXPECT_EQ(store.reads, 2);
  EXPECT_EQ(value_of(text, "tellonce_destination_queue_depth{destination=\"gp-a\"}"), 0);
  EXPECT_EQ(value_of(text, "tellonce_destination_oldest_undelivered_age_seconds{destination=\"gp-a\"}"), 0);
}

TEST(BrokerMetrics, RecordsAreCountedByTheirLabelsAndMadeUpResourceTypesShareOneLabel) {
  BrokerMetrics m("1", {"gp-a"});
  m.received("fhir-http", "rtx");
  m.received("fhir-http", "rtx");
  m.received("fhir-http", "rtx");
  m.accepted("fhir-http", "rtx", "Patient", false, 0.004);
  m.rejected("fhir-http", "rtx", "Pat{ient}", "invalid", "fhir-resource-type", 0.001);
  m.duplicate("fhir-http", "rtx", 0.002);
  m.attempt("gp-a", DeliveryOutcome::retryable, false, now_ms() - 1000);
  m.attempt("gp-a", DeliveryOutcome::permanent, true, now_ms() - 1000);
  m.attempt("gp-a", DeliveryOutcome::ok, false, now_ms() - 2000);
  BacklogStore store;
  auto text = test::run_async(m.scrape(store));
  EXPECT_EQ(value_of(text, "tellonce_records_received_total{channel=\"fhir-http\",partner=\"rtx\"}"), 3);
  EXPECT_EQ(value_of(text, "tellonce_records_accepted_total{channel=\"fhir-http\",partner=\"rtx\",resource_type=\"Patient\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_records_rejected_total{channel=\"fhir-http\",partner=\"rtx\",resource_type=\"invalid\",reason_class=\"invalid\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_records_duplicate_total{channel=\"fhir-http\",partner=\"rtx\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_accept_latency_seconds_count{channel=\"fhir-http\"}"), 3);
  EXPECT_EQ(value_of(text, "tellonce_delivery_retries_total{destination=\"gp-a\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_dead_letters_total{destination=\"gp-a\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_delivery_attempts_total{destination=\"gp-a\",outcome=\"ok\"}"), 1);
  EXPECT_EQ(value_of(text, "tellonce_delivery_latency_seconds_count{destination=\"gp-a\"}"), 1);
  EXPECT_GE(value_of(text, "tellonce_delivery_latency_seconds_sum{destination=\"gp-a\"}"), 2.0);
  rapidjson::Document flow;
  ASSERT_FALSE(flow.Parse(m.flow_json(now_ms()).c_str()).HasParseError());
  EXPECT_EQ(flow["in"]["fhir-http"]["rejected"][14].GetUint64(), 1u);
  EXPECT_STREQ(flow["topRejections"][0]["reason"].GetString(), "fhir-resource-type");
}

// A store whose health the test sets (from the test's thread; read on the server's).
class HealthStore : public test::NullStore {
 public:
  asio::awaitable<Result<void>> health() override {
    if (!full) co_return Result<void>{};
    co_return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "the disk is full", "", ""});
  }
  std::atomic<bool> full{false};
};

// /readyz answered by its real handler (mount_operations) on a loopback server: 503 with each
// reason it is not ready (listeners not bound yet, the store, stopping), alone and together.
TEST(Readiness, ReadyzIs503WithEachReasonItIsNotReadyAnd200OnlyWithNone) {
  BrokerMetrics m("1", {"gp-a"});
  HealthStore store;
  test::IoThread io;
  HttpServer server(io.io, "127.0.0.1:0", HttpLimits{});
  mount_operations(server, m, store);
  server.start();
  io.start();
  struct Answer {
    unsigned status = 0;
    std::string state;
    std::vector<std::string> problems;
  };
  auto readyz = [&] {
    auto res = test::send(server.port(), test::make_request(http::verb::get, "/readyz"));
    Answer a;
    a.status = static_cast<unsigned>(res.result_int());
    rapidjson::Document d;
    d.Parse(res.body().c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("status") || !d.HasMember("problems")) {
      a.state = "unparsable: " + res.body();
      return a;
    }
    a.state = d["status"].GetString();
    for (const auto& p : d["problems"].GetArray()) a.problems.emplace_back(p.GetString());
    return a;
  };
  using Problems = std::vector<std::string>;

  // Started, listeners not yet bound (the broker sets that once every listener is).
  auto a = readyz();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.state, "not ready");
  EXPECT_EQ(a.problems, Problems{"listeners: not every listener is bound yet"});
  m.set_listening(true);
  a = readyz();
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.state, "ready");
  EXPECT_EQ(a.problems, Problems{});
  store.full = true;
  a = readyz();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.problems, Problems{"store: the disk is full"});
  store.full = false;
  EXPECT_EQ(readyz().status, 200u);  // the store recovered: ready again
  m.set_stopping();
  a = readyz();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.problems, Problems{"broker: stopping, not taking new records"});
  store.full = true;
  a = readyz();
  EXPECT_EQ(a.status, 503u);
  EXPECT_EQ(a.problems, (Problems{"store: the disk is full", "broker: stopping, not taking new records"}));
  // Probes stay cheap and open: /healthz is 200 throughout.
  EXPECT_EQ(test::send(server.port(), test::make_request(http::verb::get, "/healthz")).result_int(), 200);
  server.stop();
  io.stop();
}

TEST(JsonLog, OneObjectALineWithTheIdsTheMessageNames) {
  auto line = log::json_line(log::Level::warn, "route",
                             "message 01M8 from rtx matched no route message=01M8ABC partner=rtx");
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << line;
  EXPECT_STREQ(doc["level"].GetString(), "warn");
  EXPECT_STREQ(doc["component"].GetString(), "route");
  EXPECT_STREQ(doc["messageId"].GetString(), "01M8ABC");
  EXPECT_STREQ(doc["partner"].GetString(), "rtx");
  EXPECT_FALSE(doc.HasMember("destination"));
  EXPECT_TRUE(std::string(doc["time"].GetString()).ends_with("Z"));
}

// A delivery's line names its partner as destination=; the first event= is the broker's, before
// the partner's own words.
TEST(JsonLog, ADeliveryLineNamesItsEventAndItsDestinationAsThePartner) {
  auto line = log::json_line(log::Level::error, "delivery",
                             "attempt failed destination=gp-a message=01M8ABC event=delivery.dead attempt=1 "
                             "partner_code=\"HTTP 400\" transport=\"x event=forged\"");
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << line;
  EXPECT_STREQ(doc["event"].GetString(), "delivery.dead");
  EXPECT_STREQ(doc["messageId"].GetString(), "01M8ABC");
  EXPECT_STREQ(doc["destination"].GetString(), "gp-a");
  EXPECT_STREQ(doc["partner"].GetString(), "gp-a");

  auto both = log::json_line(log::Level::info, "api", "replay by filter event=message.replayed_by_filter: "
                                                      "partner=rtx destination=gp-a");
  ASSERT_FALSE(doc.Parse(both.c_str()).HasParseError()) << both;
  EXPECT_STREQ(doc["partner"].GetString(), "rtx");  // its own partner= first
  EXPECT_STREQ(doc["event"].GetString(), "message.replayed_by_filter");
}

TEST(JsonLog, QuotesControlCharactersAndBytesThatAreNotUtf8StayValidJson) {
  auto line = log::json_line(log::Level::error, "delivery",
                             std::string("attempt failed destination=gp-a store=\"disk \"full\x01\xff\" \ttab"));
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << line;
  EXPECT_STREQ(doc["destination"].GetString(), "gp-a");
  EXPECT_NE(std::string(doc["message"].GetString()).find("\xEF\xBF\xBD"), std::string::npos);  // U+FFFD
}

}  // namespace
}  // namespace tellonce
