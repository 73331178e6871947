// What the store engines (engines/sqlite_store, engines/postgres_store) share below the Store
// seam: the failures they answer with, the text forms of their rows (lists, JSON arrays, the
// data of a "replayed" event), the searchable NHS number, a message's state from its delivery
// counts, and the search cursor both give out. So that the two stores answer alike, which the
// Store contract suite checks. Pure functions: no threads, no I/O, no exceptions.
#pragma once

#include "tellonce/error.hpp"
#include "tellonce/message.hpp"

#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tellonce::store_detail {

Failure unavailable(std::string diagnostics);  // retryable: the store cannot now
Failure not_found(const std::string& message_id);
Failure not_held(const std::string& partner, const std::string& message_id);
// A write the engine refused: a constraint violation fails again unchanged (permanent conflict);
// anything else (disk full, I/O, a lost connection) may pass later (unavailable).
Failure unsaved(const std::string& engine_error, bool constraint_violation);

std::vector<std::string> split(const std::string& list, char separator);
std::vector<std::string> json_strings(const rapidjson::Value* array);  // the strings of a JSON array
std::string json_member_string(const rapidjson::Document& doc, const char* key);
// The patient key when it is an NHS number (ten digits), else "": the searchable column.
std::string_view nhs_number_in(std::string_view patient_key);
// A replayed event's data: its destinations and who asked.
std::string replayed_data(const std::vector<std::string>& destinations, const std::string& actor);
MessageState state_from_counts(std::int64_t total, std::int64_t pending, std::int64_t dead);

// The search cursor: "<received_at_ms hex>.<seq hex>", opaque to clients, stable while the rows
// it names exist. nullopt for one no store gave out.
std::optional<std::pair<std::int64_t, std::int64_t>> parse_cursor(const std::string& cursor);
std::string make_cursor(std::int64_t received_at_ms, std::int64_t seq);

}  // namespace tellonce::store_detail
