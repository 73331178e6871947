#include "adapters/file_inbound/csv.hpp"

#include <gtest/gtest.h>

namespace tellonce::csv {
namespace {

TEST(CsvReader, ReadsQuotedCellsWithCommasQuotesAndLineBreaks) {
  auto t = read("a,b,c\n1,\"two, three\",\"say \"\"hi\"\"\"\n\"multi\nline\",x,y\n");
  ASSERT_TRUE(t) << t.error().summary();
  ASSERT_EQ(t->header, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_EQ(t->rows.size(), 2u);
  EXPECT_EQ(t->rows[0].cells, (std::vector<std::string>{"1", "two, three", "say \"hi\""}));
  EXPECT_EQ(t->rows[1].cells, (std::vector<std::string>{"multi\nline", "x", "y"}));
  // A line break inside quotes does not start a row: numbers are the spreadsheet's.
  EXPECT_EQ(t->rows[0].number, 2);
  EXPECT_EQ(t->rows[1].number, 3);
  EXPECT_EQ(t->rows[1].raw, "\"multi\nline\",x,y\n");
}

TEST(CsvReader, StripsTheByteOrderMarkAndTakesCrlf) {
  auto t = read("\xEF\xBB\xBFNHS number,Outcome\r\n943 476 5919,Completed\r\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->header[0], "NHS number");
  EXPECT_EQ(t->header_raw, "NHS number,Outcome\r\n");
  ASSERT_EQ(t->rows.size(), 1u);
  EXPECT_EQ(t->rows[0].cells[1], "Completed");
  EXPECT_EQ(t->rows[0].raw, "943 476 5919,Completed\r\n");
}

TEST(CsvReader, SkipsBlankRowsButKeepsCountingAndReadsALastRowWithoutLineEnd) {
  auto t = read("a,b\n\n,\n1,2");
  ASSERT_TRUE(t);
  ASSERT_EQ(t->rows.size(), 1u);
  EXPECT_EQ(t->rows[0].number, 4);
  EXPECT_EQ(t->rows[0].cells, (std::vector<std::string>{"1", "2"}));
}

TEST(CsvReader, EmptyCellsStayEmpty) {
  auto t = read("a,b,c\n,,3\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->rows[0].cells, (std::vector<std::string>{"", "", "3"}));
}

TEST(CsvReader, RefusesWhatCannotBeReadInPlainWords) {
  auto words = [](std::string_view text) {
    auto t = read(text);
    EXPECT_FALSE(t);
    return t ? std::string() : t.error().issues.at(0).diagnostics;
  };
  EXPECT_NE(words("a,b\n\xff\xfe,1\n").find("UTF-8"), std::string::npos);
  EXPECT_NE(words("").find("empty"), std::string::npos);
  EXPECT_NE(words("\n\n").find("empty"), std::string::npos);
  EXPECT_NE(words("a,b\n1,\"open\n").find("never closed"), std::string::npos);
  EXPECT_NE(words("a,A\n1,2\n").find("twice"), std::string::npos);
  EXPECT_NE(words("a,,c\n").find("without a name"), std::string::npos);
  EXPECT_FALSE(read("a\n1\n2\n", Limits{10, 1}));
}

TEST(CsvReader, Utf8Check) {
  EXPECT_TRUE(is_utf8("Zoë, Łukasz, 日本"));
  EXPECT_FALSE(is_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(is_utf8("\xED\xA0\x80"));      // a surrogate
  EXPECT_FALSE(is_utf8("\xE2\x82"));          // cut short
  EXPECT_FALSE(is_utf8("caf\xE9"));           // Latin-1
}

}  // namespace
}  // namespace tellonce::csv
