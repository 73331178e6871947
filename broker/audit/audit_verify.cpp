// Reading the audit log: verify the chain against its head, and export as FHIR AuditEvent.
// Both stream the file one line at a time, so a log of any size is read in constant memory.
#include "broker/audit/audit_log.hpp"

#include "tellonce/json.hpp"

#include "tellonce/log.hpp"

#include <rapidjson/document.h>

#include <ctime>
#include <fstream>
#include <ostream>

namespace tellonce {

namespace fs = std::filesystem;

namespace {

struct HeadInfo {
  std::int64_t seq = 0;
  std::string hash;
};

std::optional<HeadInfo> head_of(const fs::path& log) {
  std::ifstream in(audit_head_path(log), std::ios::binary);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) return HeadInfo{-1, ""};
  auto* seq = json_member(doc, "seq");
  if (!seq || !seq->IsInt64()) return HeadInfo{-1, ""};
  return HeadInfo{seq->GetInt64(), std::string(json_string(json_member(doc, "hash")))};
}

// The seq of a line without checking it ({"seq":N,...), or -1.
std::int64_t seq_only(const std::string& line) {
  constexpr std::string_view start = "{\"seq\":";
  if (line.compare(0, start.size(), start) != 0) return -1;
  std::int64_t n = 0;
  std::size_t i = start.size();
  if (i >= line.size() || line[i] < '0' || line[i] > '9') return -1;
  for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) n = n * 10 + (line[i] - '0');
  return n;
}

// Where (1-based line) an entry with `seq` sits from `line_no` on, or 0.
std::int64_t find_later(std::ifstream& in, std::int64_t line_no, std::int64_t seq) {
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (seq_only(line) == seq) return line_no;
  }
  return 0;
}

}  // namespace

AuditVerifyReport verify_audit_log(const fs::path& path) {
  AuditVerifyReport report;
  auto bad = [&report](std::int64_t line, std::string why) {
    report.ok = false;
    report.bad_line = line;
    report.problem = std::move(why);
    return report;
  };
  // The head first: it is renamed into place only after its entries are on disk, so it never
  // names more than the file read after it holds.
  auto head = head_of(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return bad(0, "cannot read " + path.string());
  if (head && head->seq < 0) return bad(0, "its head " + audit_head_path(path).string() + " is not readable");

  std::string line;
  std::int64_t line_no = 0, last_seq = 0;
  std::string last_hash = kAuditGenesisHash;
  while (std::getline(in, line)) {
    ++line_no;
    if (in.eof()) {  // no newline: a batch being written, or cut by a crash
      if (head && last_seq < head->seq) break;  // reported as truncated below
      report.warning = "line " + std::to_string(line_no) + " is unfinished (being written, or cut by a crash); not counted";
      break;
    }
    std::string why;
    auto entry = parse_audit_line(line, why);
    if (!entry) return bad(line_no, why);
    if (entry->seq != last_seq + 1) {
      const std::int64_t expected = last_seq + 1;
      if (entry->seq > expected) {
        const std::int64_t at = find_later(in, line_no, expected);
        if (at)
          return bad(line_no, "reordered: seq " + std::to_string(entry->seq) + " follows seq " + std::to_string(last_seq) +
                                  "; seq " + std::to_string(expected) + " is at line " + std::to_string(at));
        return bad(line_no, "removed: seq " + std::to_string(entry->seq) + " follows seq " + std::to_string(last_seq) +
                                " (" + std::to_string(entry->seq - expected) + " entr" +
                                (entry->seq - expected == 1 ? "y" : "ies") + " missing before this line)");
      }
      return bad(line_no, "reordered: seq " + std::to_string(entry->seq) + " after seq " + std::to_string(last_seq));
    }
    if (entry->prev != last_hash)
      return bad(line_no, "changed: its prev does not match the hash of the entry before it (that entry, or this link, was altered)");
    if (head && entry->seq == head->seq && entry->hash != head->hash)
      return bad(line_no, "changed: entry seq " + std::to_string(entry->seq) + " does not match the hash its head records");
    last_seq = entry->seq;
    last_hash = entry->hash;
    ++report.entries;
  }
  if (!head) {
    report.warning = "no head file (" + audit_head_path(path).string() + "): a cut tail cannot be detected";
  } else if (last_seq < head->seq) {
    return bad(line_no + 1, "truncated: the log ends at seq " + std::to_string(last_seq) + " (line " +
                                std::to_string(line_no) + ") but its head records seq " + std::to_string(head->seq) +
                                " as written");
  }
  return report;
}

std::string audit_event_json(const AuditLine& l) {
  const AuditEntry& e = l.entry;
  struct Type {
    const char* system;
    const char* code;
    const char* display;
    const char* action;
    const char* interaction;  // restful-interaction subtype, or null
  };
  constexpr const char* dcm = "http://dicom.nema.org/resources/ontology/DCM";
  constexpr const char* hl7_type = "http://terminology.hl7.org/CodeSystem/audit-event-type";
  Type t{dcm, "110100", "Application Activity", "E", nullptr};
  std::string outcome = "0";
  switch (e.kind) {
    case AuditKind::received:
    case AuditKind::duplicate: t = {dcm, "110107", "Import", "C", "create"}; break;
    case AuditKind::rejected: t = {dcm, "110107", "Import", "C", "create"}; outcome = "4"; break;
    case AuditKind::delivered:
    case AuditKind::held:
    case AuditKind::withheld: t = {dcm, "110106", "Export", "R", nullptr}; break;
    case AuditKind::delivery_failed:
    case AuditKind::expired: t = {dcm, "110106", "Export", "R", nullptr}; outcome = "4"; break;
    case AuditKind::dead: t = {dcm, "110106", "Export", "R", nullptr}; outcome = "8"; break;
    case AuditKind::body_viewed:
    case AuditKind::original_viewed: t = {dcm, "110110", "Patient Record", "R", "read"}; break;
    case AuditKind::replayed:
    case AuditKind::replay_requested:
    case AuditKind::paused:
    case AuditKind::resumed: t = {hl7_type, "rest", "Restful Operation", "E", "operation"}; break;
    case AuditKind::config_reloaded:
      t = {dcm, "110100", "Application Activity", "E", nullptr};
      if (!e.outcome.empty() && e.outcome != "ok") outcome = "8";
      break;
  }
  std::string o;
  o.reserve(1024);
  auto str = [&o](std::string_view s) { append_json_string(o, s); };
  auto identifier = [&](std::string_view system, std::string_view value) {
    o += R"({"identifier":{"system":)";
    str(system);
    o += R"(,"value":)";
    str(value);
    o += "}}";
  };
  o += R"({"resourceType":"AuditEvent","id":"tellonce-audit-)" + std::to_string(l.seq) + R"(","type":{"system":)";
  str(t.system);
  o += R"(,"code":)";
  str(t.code);
  o += R"(,"display":)";
  str(t.display);
  o += R"(},"subtype":[)";
  if (t.interaction) {
    o += R"({"system":"http://hl7.org/fhir/restful-interaction","code":)";
    str(t.interaction);
    o += "},";
  }
  o += R"({"system":"urn:tellonce:audit-kind","code":)";
  str(to_string(e.kind));
  o += R"(}],"action":)";
  str(t.action);
  o += R"(,"recorded":)";
  str(iso8601_utc(l.at_ms));
  o += R"(,"outcome":)";
  str(outcome);
  std::string desc = e.outcome;
  if (!e.detail.empty()) desc += (desc.empty() ? "" : ": ") + e.detail;
  if (!desc.empty()) {
    o += R"(,"outcomeDesc":)";
    str(desc);
  }
  if (!e.reason.empty()) {
    o += R"(,"purposeOfEvent":[{"text":)";
    str(e.reason);
    o += "}]";
  }
  o += R"(,"agent":[)";
  // A partner acts when it sends, and when it collects from its mailbox (actor = destination).
  const bool by_partner = e.kind == AuditKind::received || e.kind == AuditKind::duplicate ||
                          e.kind == AuditKind::rejected || (e.kind == AuditKind::delivered && e.actor == e.destination);
  o += R"({"who":)";
  identifier(by_partner ? "urn:tellonce:partner" : "urn:tellonce:actor", e.actor.empty() ? "unknown" : e.actor);
  o += R"(,"requestor":true})";
  if (!e.destination.empty()) {
    o += R"(,{"who":)";
    identifier("urn:tellonce:partner", e.destination);
    o += R"(,"requestor":false})";
  }
  o += R"(],"source":{"site":"tellonce","observer":{"display":"tellonce"},"type":[{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4","display":"Application Server"}]},"entity":[)";
  bool first = true;
  if (!e.message_id.empty()) {
    first = false;
    o += R"({"what":)";
    identifier("urn:tellonce:message-id", e.message_id);
    o += R"(,"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type","code":"2","display":"System Object"})";
    if (!e.resource_type.empty() || !e.source.empty()) {
      o += R"(,"detail":[)";
      bool d = false;
      if (!e.resource_type.empty()) {
        o += R"({"type":"resourceType","valueString":)";
        str(e.resource_type);
        o += "}";
        d = true;
      }
      if (!e.source.empty()) {
        o += d ? "," : "";
        o += R"({"type":"source","valueString":)";
        str(e.source);
        o += "}";
      }
      o += "]";
    }
    o += "}";
  }
  if (!first) o += ",";
  o += R"({"what":)";
  identifier("urn:tellonce:audit-log", std::to_string(l.seq));
  o += R"(,"detail":[{"type":"hash","valueString":)";
  str(l.hash);
  o += R"(},{"type":"prev","valueString":)";
  str(l.prev);
  o += "}]}]}";
  return o;
}

std::size_t export_audit_fhir(const fs::path& path, std::int64_t since_ms, std::ostream& out, std::ostream& errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors << "cannot read " << path.string() << "\n";
    return 0;
  }
  std::string line;
  std::int64_t line_no = 0;
  std::size_t written = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (in.eof()) break;  // unfinished last line
    std::string why;
    auto entry = parse_audit_line(line, why);
    if (!entry) {
      errors << path.string() << ":" << line_no << ": " << why << " (skipped; run `tellonce audit verify`)\n";
      continue;
    }
    if (entry->at_ms < since_ms) continue;
    out << audit_event_json(*entry) << "\n";
    ++written;
  }
  return written;
}

}  // namespace tellonce
