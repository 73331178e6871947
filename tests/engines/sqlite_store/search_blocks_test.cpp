// The search file's blocks (engines/sqlite_store/search_blocks.hpp): what the writer stores and
// what the search_keys virtual table reads back must be exactly the keys written, newest first,
// whatever order they were flushed in, and blocks must never overlap.
#include "engines/sqlite_store/search_blocks.hpp"
#include "engines/sqlite_store/search_keys.hpp"
#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <tuple>

namespace tellonce::store_detail {
namespace {

TEST(SearchBlocks, PostingsSurviveEncodingWhateverTheirDifferences) {
  std::vector<Posting> in = {{1'700'000'000'000, 1}, {1'700'000'000'000, 900}, {1'700'000'000'005, 2},
                             {1'700'000'009'999, 1LL << 40}, {1'800'000'000'000, 3}};
  auto bytes = encode_postings(in.data(), in.size());
  std::vector<Posting> out;
  ASSERT_TRUE(decode_postings(in[0], bytes, out));
  EXPECT_EQ(out, in);
  out.clear();
  EXPECT_FALSE(decode_postings(in[0], bytes.substr(0, bytes.size() - 1), out));  // cut short
  out.clear();
  ASSERT_TRUE(decode_postings(in[0], encode_postings(in.data(), 1), out));
  EXPECT_EQ(out.size(), 1u);
}

class SearchBlocksFile : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = dir_.path() / "t.db";
    db_ = std::make_unique<sqlite::Connection>(store_, false);
    attach_search_file(*db_, store_, true);
  }

  void flush(const std::vector<SearchKey>& keys, std::int64_t upto) {
    db_->exec_or_throw("BEGIN IMMEDIATE");
    write_search_keys(*db_, keys, upto, cache_);
    ASSERT_FALSE(db_->failed()) << db_->error_message();
    db_->exec_or_throw("COMMIT");
    for (const auto& k : keys) written_.insert({k.facet, k.value, Posting{k.received_at_ms, k.seq}});
  }

  // What the table gives for one (facet, value), with an optional extra WHERE.
  std::vector<Posting> read(int facet, const std::string& value, const std::string& where = "") {
    sqlite::Statement st(*db_, "SELECT received_at_ms, seq FROM search_keys WHERE facet = ?1 AND value = ?2" +
                                   (where.empty() ? "" : " AND " + where) +
                                   " ORDER BY received_at_ms DESC, seq DESC");
    st.start().bind(1, std::int64_t{facet}).bind(2, std::string_view(value));
    std::vector<Posting> out;
    while (st.step()) out.push_back(Posting{st.int64(0), st.int64(1)});
    st.reset();
    EXPECT_FALSE(db_->failed()) << db_->error_message();
    return out;
  }

  std::vector<Posting> expected(int facet, const std::string& value) const {
    std::vector<Posting> out;
    for (const auto& [f, v, p] : written_)
      if (f == facet && v == value) out.push_back(p);
    std::sort(out.rbegin(), out.rend());
    return out;
  }

  // Ordered by their last posting, each block begins after the one before it ends.
  void expect_disjoint_blocks() {
    sqlite::Statement st(*db_, "SELECT facet, value, first_at, first_seq, last_at, last_seq FROM search.search_blocks "
                               "ORDER BY facet, value, last_at, last_seq");
    st.start();
    std::tuple<std::int64_t, std::string, Posting> before{-1, "", {}};
    while (st.step()) {
      std::tuple<std::int64_t, std::string> group{st.int64(0), st.text(1)};
      Posting first{st.int64(2), st.int64(3)}, last{st.int64(4), st.int64(5)};
      EXPECT_LE(first, last);
      if (std::get<0>(before) == std::get<0>(group) && std::get<1>(before) == std::get<1>(group))
        EXPECT_LT(std::get<2>(before), first) << "blocks overlap in facet " << std::get<0>(group);
      before = {std::get<0>(group), std::get<1>(group), last};
    }
    st.reset();
  }

  test::TempDir dir_{"tellonce-search-blocks"};
  std::filesystem::path store_;
  std::unique_ptr<sqlite::Connection> db_;
  SearchBlockCache cache_;
  std::set<std::tuple<int, std::string, Posting>> written_;
};

// Records are committed in an order close to, but not the same as, the order they were
// received in: flushes hold late postings that belong inside blocks already written.
TEST_F(SearchBlocksFile, LatePostingsAreMergedAndEveryReadSeesExactlyWhatWasWritten) {
  std::mt19937_64 rng(7);
  const std::vector<std::string> sources = {"rtx", "gp-a81001", "vcse-1"};
  std::int64_t seq = 0;
  for (int flush_no = 0; flush_no < 12; ++flush_no) {
    std::vector<SearchKey> keys;
    const int records = flush_no % 3 == 0 ? 700 : 40;  // some flushes past a block's 256
    for (int i = 0; i < records; ++i) {
      ++seq;
      // Received up to 50 ms before it was committed; 1 ms a record.
      const std::int64_t at = 1'000'000 + seq - static_cast<std::int64_t>(rng() % 50);
      keys.push_back(SearchKey{static_cast<int>(Facet::every), "", at, seq});
      keys.push_back(SearchKey{static_cast<int>(Facet::source), sources[rng() % sources.size()], at, seq});
      keys.push_back(SearchKey{static_cast<int>(Facet::nhs_number), std::to_string(9000000000 + rng() % 30), at, seq});
    }
    if (flush_no == 5) keys.push_back(keys.front());  // written twice (a rebuild after a crash): kept once
    flush(keys, seq);
    expect_disjoint_blocks();
    EXPECT_EQ(read(0, ""), expected(0, ""));
    for (const auto& s : sources) EXPECT_EQ(read(1, s), expected(1, s)) << s;
  }
  for (int n = 0; n < 30; ++n) {
    const auto nhs = std::to_string(9000000000 + n);
    EXPECT_EQ(read(4, nhs), expected(4, nhs)) << nhs;
  }
  // Bounds, as the listing's cursor and time range give them.
  const auto all = expected(1, "rtx");
  ASSERT_GT(all.size(), 600u);
  const Posting mid = all[all.size() / 2];
  auto between = [&](std::int64_t lo, std::int64_t hi) {
    std::vector<Posting> out;
    for (const auto& p : all)
      if (p.at >= lo && p.at < hi) out.push_back(p);
    return out;
  };
  EXPECT_EQ(read(1, "rtx", "received_at_ms < " + std::to_string(mid.at) + " AND received_at_ms >= " +
                               std::to_string(mid.at - 100)),
            between(mid.at - 100, mid.at));
  EXPECT_EQ(read(1, "rtx", "received_at_ms <= " + std::to_string(mid.at)), between(0, mid.at + 1));
  EXPECT_EQ(read(1, "rtx", "received_at_ms > " + std::to_string(mid.at)), between(mid.at + 1, 1LL << 60));
  std::vector<Posting> after_cursor;
  for (const auto& p : all)
    if (p < mid) after_cursor.push_back(p);
  EXPECT_EQ(read(1, "rtx", "(received_at_ms, seq) < (" + std::to_string(mid.at) + ", " + std::to_string(mid.seq) +
                               ") AND received_at_ms <= " + std::to_string(mid.at)),
            after_cursor);
  // One posting, as a filter's EXISTS asks: there, and not there.
  EXPECT_EQ(read(1, "rtx", "received_at_ms = " + std::to_string(mid.at) + " AND seq = " + std::to_string(mid.seq)),
            std::vector<Posting>{mid});
  for (const auto& s : {std::string("gp-a81001"), std::string("vcse-1")})
    EXPECT_TRUE(read(1, s, "received_at_ms = " + std::to_string(mid.at) + " AND seq = " + std::to_string(mid.seq))
                    .empty());
  // A value never written, and a facet without a value, give nothing.
  EXPECT_TRUE(read(1, "nobody").empty());
  // A listing that can match nothing (state=accepted is never stored) still plans and runs.
  EXPECT_TRUE(read(1, "rtx", "0").empty());
  EXPECT_TRUE(read(2, "").empty());
}

// The cache is only a shortcut: a writer that starts with none (a restart) looks the last
// blocks up in the file and merges just the same.
TEST_F(SearchBlocksFile, AWriterWithoutItsCacheMergesFromTheFile) {
  flush({SearchKey{1, "rtx", 100, 1}, SearchKey{1, "rtx", 110, 3}, SearchKey{1, "gp", 105, 2}}, 3);
  cache_ = SearchBlockCache{};
  flush({SearchKey{1, "rtx", 104, 4}, SearchKey{1, "rtx", 120, 5}, SearchKey{1, "gp", 90, 6}}, 6);
  expect_disjoint_blocks();
  EXPECT_EQ(read(1, "rtx"), expected(1, "rtx"));
  EXPECT_EQ(read(1, "gp"), expected(1, "gp"));
  EXPECT_EQ(read(1, "rtx").size(), 4u);
}

}  // namespace
}  // namespace tellonce::store_detail
