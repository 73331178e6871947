// ACKs. An ACK is written in the original message's own delimiters, so the fields it echoes
// (MSH-3/4 as MSH-5/6, MSH-10 as MSA-2, MSH-11, MSH-12) are copied as received, unchanged.
#include "hl7v2/ack.hpp"

#include <algorithm>
#include <array>
#include <ctime>
#include <utility>

namespace tellonce::hl7v2 {

namespace {

// HL7 table 0357 (message error condition codes) as in v2.5.
std::string_view table_0357_text(std::string_view code) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 14> texts{{
      {"0", "Message accepted"},
      {"100", "Segment sequence error"},
      {"101", "Required field missing"},
      {"102", "Data type error"},
      {"103", "Table value not found"},
      {"104", "Value too long"},
      {"200", "Unsupported message type"},
      {"201", "Unsupported event code"},
      {"202", "Unsupported processing id"},
      {"203", "Unsupported version id"},
      {"204", "Unknown key identifier"},
      {"205", "Duplicate key identifier"},
      {"206", "Application record locked"},
      {"207", "Application internal error"},
  }};
  for (const auto& [c, t] : texts)
    if (c == code) return t;
  return {};
}

// MSA-3 is 80 characters in v2.4; cut on a UTF-8 boundary.
std::string cut_utf8(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

// Text fields are escaped; "^" in an ERR-2 location separates its components, written with the
// message's component separator.
std::string location_field(std::string_view location, const Encoding& enc) {
  std::string out;
  std::size_t start = 0;
  while (true) {
    const std::size_t hat = location.find('^', start);
    out += escape(location.substr(start, hat == std::string_view::npos ? std::string_view::npos : hat - start), enc);
    if (hat == std::string_view::npos) break;
    out += enc.component;
    start = hat + 1;
  }
  return out;
}

// The fields an ACK echoes, already in `enc`'s delimiters.
struct Echo {
  Encoding enc;
  std::string msh2;            // encoding characters as declared
  std::string sender_app;      // original MSH-3 -> ACK MSH-5
  std::string sender_facility; // original MSH-4 -> ACK MSH-6
  std::string event;           // original MSH-9.2
  std::string control_id;      // original MSH-10 -> MSA-2
  std::string processing_id;   // MSH-11
  std::string version;         // MSH-12
};

std::string render(const Echo& e, AckCode code, const std::vector<AckError>& errors, const AckSender& sender,
                   std::string_view control_id, std::string_view timestamp) {
  const Encoding& enc = e.enc;
  const char f = enc.field;
  std::string out;
  out.reserve(256 + errors.size() * 128);
  out += "MSH";
  out += f;
  out += e.msh2;
  out += f;
  out += escape(sender.application, enc);
  out += f;
  out += escape(sender.facility, enc);
  out += f;
  out += e.sender_app;
  out += f;
  out += e.sender_facility;
  out += f;
  out += escape(timestamp, enc);
  out += f;
  out += f;
  out += "ACK";
  if (!e.event.empty()) {
    out += enc.component;
    out += e.event;
    out += enc.component;
    out += "ACK";
  }
  out += f;
  out += escape(control_id, enc);
  out += f;
  out += e.processing_id;
  out += f;
  out += e.version;
  out += '\r';

  out += "MSA";
  out += f;
  out += to_string(code);
  out += f;
  out += e.control_id;
  if (!errors.empty() && !errors.front().diagnostic.empty()) {
    out += f;
    out += escape(cut_utf8(errors.front().diagnostic, 80), enc);
  }
  out += '\r';

  for (const AckError& err : errors) {
    const std::string_view code_0357 = err.hl7_code.empty() ? std::string_view("207") : err.hl7_code;
    out += "ERR";
    out += f;  // ERR-1 (v2.4 layout) left empty
    out += f;
    out += location_field(err.location, enc);
    out += f;
    out += escape(code_0357, enc);
    out += enc.component;
    out += escape(table_0357_text(code_0357), enc);
    out += enc.component;
    out += "HL70357";
    out += f;
    const char severity = err.severity == 'W' || err.severity == 'I' ? err.severity : 'E';
    out += severity;
    out += f;  // ERR-5 application error code
    out += f;  // ERR-6 application error parameter
    out += f;  // ERR-7 diagnostic information
    out += f;
    out += escape(err.diagnostic, enc);
    out += '\r';
  }
  return out;
}

bool printable_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) return false;
  return true;
}

}  // namespace

std::string_view to_string(AckCode c) {
  switch (c) {
    case AckCode::AA: return "AA";
    case AckCode::AE: return "AE";
    case AckCode::AR: return "AR";
    case AckCode::CA: return "CA";
    case AckCode::CE: return "CE";
    case AckCode::CR: return "CR";
  }
  return "AR";
}

std::optional<AckCode> ack_code_from(std::string_view s) {
  for (AckCode c : {AckCode::AA, AckCode::AE, AckCode::AR, AckCode::CA, AckCode::CE, AckCode::CR})
    if (to_string(c) == s) return c;
  return std::nullopt;
}

std::string build_ack(const Message& original, AckCode code, const std::vector<AckError>& errors,
                      const AckSender& sender, std::string_view control_id, std::string_view timestamp) {
  const Segment& msh = original.msh();
  Echo e;
  e.enc = original.encoding();
  e.msh2 = std::string(msh.raw_field(2));
  e.sender_app = std::string(msh.raw_field(3));
  e.sender_facility = std::string(msh.raw_field(4));
  e.event = escape(original.trigger_event(), e.enc);
  e.control_id = std::string(msh.raw_field(10));
  e.processing_id = std::string(msh.raw_field(11));
  e.version = std::string(msh.raw_field(12));
  return render(e, code, errors, sender, control_id, timestamp);
}

std::string build_ack_for_unparsed(std::string_view raw, AckCode code, const std::vector<AckError>& errors,
                                   const AckSender& sender, std::string_view control_id,
                                   std::string_view timestamp) {
  Echo e;  // default delimiters; every echoed field empty until read
  e.msh2 = "^~\\&";
  if (raw.substr(0, 3) == "\xEF\xBB\xBF") raw.remove_prefix(3);
  while (!raw.empty() && (raw.front() == '\r' || raw.front() == '\n' || raw.front() == ' ' || raw.front() == '\t'))
    raw.remove_prefix(1);
  // Scrape with the delimiters it declares when they look sane, re-escaping into ours.
  const std::string_view line = raw.substr(0, raw.find_first_of("\r\n"));
  if (line.substr(0, 3) != "MSH" || line.size() < 8) return render(e, code, errors, sender, control_id, timestamp);
  Encoding theirs;
  theirs.field = line[3];
  const std::size_t msh2_end = line.find(theirs.field, 4);
  const std::string_view msh2 = line.substr(4, msh2_end == std::string_view::npos ? 0 : msh2_end - 4);
  bool sane = printable_ascii(line.substr(3, 1)) && (msh2.size() == 4 || msh2.size() == 5) && printable_ascii(msh2);
  if (sane) {
    theirs.component = msh2[0];
    theirs.repetition = msh2[1];
    theirs.escape = msh2[2];
    theirs.subcomponent = msh2[3];
    const std::string_view all = line.substr(3, msh2.size() + 1);
    for (std::size_t a = 0; a < all.size() && sane; ++a)
      for (std::size_t b = a + 1; b < all.size(); ++b)
        if (all[a] == all[b] || all[a] == ' ') sane = false;
  }
  if (!sane) return render(e, code, errors, sender, control_id, timestamp);

  std::vector<std::string_view> fields;  // fields[n] is MSH-(n+1)
  fields.push_back(line.substr(3, 1));
  for (std::size_t start = 4; fields.size() < 12;) {
    const std::size_t sep = line.find(theirs.field, start);
    fields.push_back(line.substr(start, sep == std::string_view::npos ? std::string_view::npos : sep - start));
    if (sep == std::string_view::npos) break;
    start = sep + 1;
  }
  // A field is echoed only when it is short printable text; components keep their structure.
  const auto echo = [&](std::size_t n, std::size_t max_components) -> std::string {
    if (n > fields.size()) return {};
    const std::string_view f = fields[n - 1];
    if (f.size() > 199 || !printable_ascii(f)) return {};
    const std::string_view first_rep = f.substr(0, f.find(theirs.repetition));
    std::string out;
    std::size_t start = 0;
    for (std::size_t c = 1; c <= max_components; ++c) {
      const std::size_t sep = first_rep.find(theirs.component, start);
      const std::string_view piece =
          first_rep.substr(start, sep == std::string_view::npos ? std::string_view::npos : sep - start);
      if (c > 1) out += e.enc.component;
      out += escape(unescape(piece.substr(0, piece.find(theirs.subcomponent)), theirs), e.enc);
      if (sep == std::string_view::npos) break;
      start = sep + 1;
    }
    while (!out.empty() && out.back() == e.enc.component) out.pop_back();
    return out;
  };
  e.sender_app = echo(3, 3);
  e.sender_facility = echo(4, 3);
  {
    const std::string type = echo(9, 2);
    const std::size_t hat = type.find(e.enc.component);
    if (hat != std::string::npos) e.event = type.substr(hat + 1);
  }
  e.control_id = echo(10, 1);
  e.processing_id = echo(11, 1);
  e.version = echo(12, 1);
  return render(e, code, errors, sender, control_id, timestamp);
}

Result<ReceivedAck> read_ack(std::string_view er7) {
  auto parsed = parse(er7);
  if (!parsed.has_value()) return parsed.error();
  const Message& m = parsed.value();
  const Segment* msa = m.first("MSA");
  if (msa == nullptr) {
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
                                                     "the acknowledgement has no MSA segment", "MSA^1", "hl7v2-ack"});
  }
  ReceivedAck ack;
  const auto code = ack_code_from(msa->value(1));
  if (!code) {
    return Failure::permanent(Errc::malformed,
                              Issue{Severity::error, "code-invalid",
                                    "MSA-1 is not an acknowledgement code (AA AE AR CA CE CR)", "MSA^1^1",
                                    "hl7v2-ack"});
  }
  ack.code = *code;
  ack.acked_control_id = msa->value(2);
  std::vector<std::string> texts;  // MSA-3 often repeats the first ERR's text: say it once
  const auto add_text = [&](const std::string& t) {
    if (t.empty() || std::find(texts.begin(), texts.end(), t) != texts.end()) return;
    texts.push_back(t);
    if (!ack.text.empty()) ack.text += "; ";
    ack.text += t;
  };
  add_text(msa->value(3));
  for (const Segment* err : m.all("ERR")) {
    // v2.5 and later: ERR-3 the 0357 code, ERR-8 the user message (else ERR-7, else ERR-3's text).
    std::string code_0357 = err->value(3, 1);
    std::string text = err->value(8);
    if (text.empty()) text = err->value(7);
    if (text.empty()) text = err->value(3, 2);
    // v2.4 and earlier: ERR-1 (repeating) segment^sequence^field^code&text&system.
    if (code_0357.empty() && text.empty()) {
      for (std::size_t rep = 1; rep <= err->repetition_count(1); ++rep) {
        const std::string c = err->value(1, 4, 1, rep);
        if (!c.empty()) ack.error_codes.push_back(c);
        add_text(err->value(1, 4, 2, rep));
      }
      continue;
    }
    if (!code_0357.empty()) ack.error_codes.push_back(std::move(code_0357));
    add_text(text);
  }
  return ack;
}

std::string hl7_timestamp_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S+0000", &utc);
  return std::string(buf, n);
}

}  // namespace tellonce::hl7v2
