#include "engines/common/store_rows.hpp"

#include "tellonce/json.hpp"

#include <cstdio>
#include <exception>

namespace tellonce::store_detail {

Failure unsaved(const std::string& engine_error, bool constraint_violation) {
  std::string diagnostics = "the message store could not save the record: " + engine_error;
  if (constraint_violation)
    return Failure::permanent(Errc::conflict, Issue{Severity::error, "conflict", std::move(diagnostics), "", ""});
  return unavailable(diagnostics + "; nothing was stored, try again later");
}

Failure unavailable(std::string diagnostics) {
  return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", std::move(diagnostics), "", ""});
}

Failure not_found(const std::string& message_id) {
  return Failure::permanent(
      Errc::not_found, Issue{Severity::error, "not-found", "no message with id " + message_id + " in the store", "", ""});
}

Failure not_held(const std::string& partner, const std::string& message_id) {
  return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found",
                                                   "message " + message_id + " is not in the mailbox of " + partner,
                                                   "", ""});
}

std::vector<std::string> split(const std::string& list, char separator) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at < list.size();) {
    auto end = list.find(separator, at);
    if (end == std::string::npos) end = list.size();
    out.push_back(list.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

std::vector<std::string> json_strings(const rapidjson::Value* array) {
  std::vector<std::string> out;
  if (array && array->IsArray())
    for (const auto& item : array->GetArray())
      if (item.IsString()) out.emplace_back(item.GetString(), item.GetStringLength());
  return out;
}

std::string json_member_string(const rapidjson::Document& doc, const char* key) {
  if (!doc.IsObject()) return {};
  auto it = doc.FindMember(key);
  return it != doc.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString(), it->value.GetStringLength())
                                                       : std::string();
}

std::string_view nhs_number_in(std::string_view patient_key) {
  // "" rather than {}: SQLite binds a null pointer as NULL.
  if (patient_key.size() != 10) return "";
  for (char c : patient_key)
    if (c < '0' || c > '9') return "";
  return patient_key;
}

std::string replayed_data(const std::vector<std::string>& destinations, const std::string& actor) {
  std::string data = "{\"destinations\":[";
  for (std::size_t i = 0; i < destinations.size(); ++i) {
    if (i) data += ',';
    append_json_string(data, destinations[i]);
  }
  data += ']';
  if (!actor.empty()) {
    data += ",\"actor\":";
    append_json_string(data, actor);
  }
  data += '}';
  return data;
}

MessageState state_from_counts(std::int64_t total, std::int64_t pending, std::int64_t dead) {
  if (total == 0) return MessageState::unroutable;
  if (pending > 0) return MessageState::delivering;
  if (dead > 0) return MessageState::failed;
  return MessageState::delivered;
}

std::optional<std::pair<std::int64_t, std::int64_t>> parse_cursor(const std::string& cursor) {
  // "<received_at_ms hex>.<seq hex>": opaque to clients, stable while the rows it names exist.
  auto dot = cursor.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == cursor.size()) return std::nullopt;
  try {
    std::size_t used = 0;
    auto at = std::stoll(cursor.substr(0, dot), &used, 16);
    if (used != dot) return std::nullopt;
    auto seq = std::stoll(cursor.substr(dot + 1), &used, 16);
    if (used != cursor.size() - dot - 1) return std::nullopt;
    return std::make_pair(static_cast<std::int64_t>(at), static_cast<std::int64_t>(seq));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string make_cursor(std::int64_t received_at_ms, std::int64_t seq) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llx.%llx", static_cast<unsigned long long>(received_at_ms),
                static_cast<unsigned long long>(seq));
  return buf;
}

}  // namespace tellonce::store_detail
