// FHIR R4 -> HL7 v2.4 ADT in the NHS ITK flavour. Codes that differ between the two come from
// schemas/hl7v2/out-codes.csv; the layout (which element lands in which field) is here, and
// docs/hl7v2-mapping.md lists it field by field. Every value is escaped on its way in.
#include "hl7v2/from_fhir.hpp"

#include "hl7v2/er7.hpp"
#include "tellonce/json.hpp"

#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace tellonce::hl7v2 {

namespace {

using rapidjson::Value;

constexpr std::string_view kNhsNumberSystem = "https://fhir.nhs.uk/Id/nhs-number";
constexpr std::string_view kOdsSystem = "https://fhir.nhs.uk/Id/ods-organization-code";
constexpr std::string_view kVerificationStatusUrl =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";
// GP national codes: the UK Core system, and the older NHS one still seen in feeds.
constexpr std::string_view kGpSystems[] = {"https://fhir.hl7.org.uk/Id/gmp-number", "https://fhir.nhs.uk/Id/gmp-number",
                                           "https://fhir.hl7.org.uk/Id/gmc-number", "https://fhir.nhs.uk/Id/gmc-number"};

const Value* member(const Value& v, std::string_view name) { return json_member(v, name); }
std::string_view str(const Value* v) { return json_string(v); }
std::string_view str(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

// The elements of an array member (none when absent or not an array).
std::vector<const Value*> items(const Value& v, std::string_view name) {
  std::vector<const Value*> out;
  const Value* a = member(v, name);
  if (a == nullptr || !a->IsArray()) return out;
  out.reserve(a->Size());
  for (const Value& e : a->GetArray()) out.push_back(&e);
  return out;
}

// Components, escaped and joined by '^', without trailing empty ones.
std::string components(std::initializer_list<std::string_view> parts) {
  std::string out;
  std::size_t kept = 0;
  std::size_t i = 0;
  for (std::string_view p : parts) {
    ++i;
    if (i > 1) out += '^';
    out += escape(p);
    if (!p.empty()) kept = out.size();
  }
  out.resize(kept);
  return out;
}

void add_repetition(std::string& field, const std::string& rep) {
  if (rep.empty()) return;
  if (!field.empty()) field += '~';
  field += rep;
}

// A segment: fields[0] is field 1; trailing empty fields are left off.
std::string segment(std::string_view id, std::vector<std::string> fields) {
  while (!fields.empty() && fields.back().empty()) fields.pop_back();
  std::string out(id);
  for (const std::string& f : fields) {
    out += '|';
    out += f;
  }
  out += '\r';
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// FHIR date/dateTime/instant -> HL7 DTM: "2024-01-01T12:30:00.5+01:00" -> "20240101123000.5+0100".
// Empty when the text is not a FHIR date (a bad value is left out rather than sent garbled).
std::string hl7_datetime(std::string_view fhir) {
  std::string out;
  std::size_t i = 0;
  const auto digits = [&](std::size_t n) {
    for (std::size_t k = 0; k < n; ++k, ++i) {
      if (i >= fhir.size() || !is_digit(fhir[i])) return false;
      out += fhir[i];
    }
    return true;
  };
  const auto sep = [&](char c) {
    if (i < fhir.size() && fhir[i] == c) {
      ++i;
      return true;
    }
    return false;
  };
  if (!digits(4)) return {};
  if (sep('-')) {
    if (!digits(2)) return {};
    if (sep('-') && !digits(2)) return {};
  }
  if (sep('T')) {
    if (!digits(2) || !sep(':') || !digits(2)) return {};
    if (sep(':') && !digits(2)) return {};
    if (sep('.')) {
      out += '.';
      std::size_t n = 0;
      for (; i < fhir.size() && is_digit(fhir[i]) && n < 4; ++i, ++n) out += fhir[i];
      while (i < fhir.size() && is_digit(fhir[i])) ++i;  // HL7 DTM carries four places
      if (n == 0) return {};
    }
    if (sep('Z')) {
      out += "+0000";
    } else if (i < fhir.size() && (fhir[i] == '+' || fhir[i] == '-')) {
      out += fhir[i++];
      if (!digits(2) || !sep(':') || !digits(2)) return {};
    }
  }
  return i == fhir.size() ? out : std::string();
}

}  // namespace

namespace {

class Tables {
 public:
  void load(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) throw std::runtime_error(file.string() + ": cannot read the FHIR -> v2 code table");
    std::string line;
    std::size_t number = 0;
    bool header = true;
    while (std::getline(in, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      if (header) {
        if (line != "table,fhir_code,v2_code") {
          throw std::runtime_error(file.string() + ":" + std::to_string(number) +
                                   ": expected the header table,fhir_code,v2_code");
        }
        header = false;
        continue;
      }
      const std::size_t a = line.find(',');
      const std::size_t b = a == std::string::npos ? a : line.find(',', a + 1);
      if (b == std::string::npos || line.find(',', b + 1) != std::string::npos || a == 0 || b == a + 1) {
        throw std::runtime_error(file.string() + ":" + std::to_string(number) +
                                 ": expected three values table,fhir_code,v2_code");
      }
      auto& table = tables_[line.substr(0, a)];
      if (!table.emplace(line.substr(a + 1, b - a - 1), line.substr(b + 1)).second) {
        throw std::runtime_error(file.string() + ":" + std::to_string(number) + ": code listed twice in its table");
      }
    }
    for (const char* required : {"gender", "encounter-class"}) {
      if (!tables_.count(required)) {
        throw std::runtime_error(file.string() + ": table '" + required + "' is missing");
      }
    }
  }

  std::string_view lookup(std::string_view table, std::string_view code) const {
    const auto t = tables_.find(std::string(table));
    if (t == tables_.end()) return {};
    const auto c = t->second.find(std::string(code));
    return c == t->second.end() ? std::string_view() : std::string_view(c->second);
  }

 private:
  std::map<std::string, std::unordered_map<std::string, std::string>> tables_;
};

// What a resource can refer to: its Bundle's entries and its own contained resources.
struct Context {
  const Value* bundle = nullptr;
  const Value* resource = nullptr;

  // The resource a Reference points at, or nullptr ("#id" contained, "Type/id" or a fullUrl).
  const Value* resolve(const Value& ref) const {
    const std::string_view target = str(ref, "reference");
    if (target.empty()) return nullptr;
    if (target[0] == '#' && resource != nullptr) {
      for (const Value* c : items(*resource, "contained"))
        if (str(*c, "id") == target.substr(1)) return c;
      return nullptr;
    }
    if (bundle == nullptr) return nullptr;
    for (const Value* e : items(*bundle, "entry")) {
      const Value* r = member(*e, "resource");
      if (r == nullptr) continue;
      if (str(*e, "fullUrl") == target) return r;
      const std::string_view type = str(*r, "resourceType"), id = str(*r, "id");
      if (!id.empty() && target.size() == type.size() + 1 + id.size() && target.substr(0, type.size()) == type &&
          target[type.size()] == '/' && target.substr(type.size() + 1) == id) {
        return r;
      }
      // An absolute URL ending in Type/id.
      if (!id.empty() && target.size() > type.size() + id.size() + 2) {
        const std::string tail = "/" + std::string(type) + "/" + std::string(id);
        if (target.substr(target.size() - tail.size()) == tail) return r;
      }
    }
    return nullptr;
  }
};

class Renderer {
 public:
  Renderer(const Tables& t, const V2Addressing& to) : tables_(t), to_(to) {}

  std::string msh(std::string_view event, std::string_view structure, std::string_view control_id,
                  std::string_view timestamp) const {
    std::string out = "MSH|^~\\&|";
    out += segment_fields({components({to_.sending_application}), components({to_.sending_facility}),
                           components({to_.receiving_application}), components({to_.receiving_facility}),
                           escape(timestamp), "", components({"ADT", event, structure}), escape(control_id),
                           escape(to_.processing_id), "2.4", "", "", "", "", "GBR", "UNICODE UTF-8", "EN", "",
                           "iTKv1.0"});
    return out;
  }

  std::string evn(std::string_view event, std::string_view timestamp, std::string_view occurred) const {
    return segment("EVN", {"", escape(timestamp), "", "", "", hl7_datetime(occurred)});
  }

  // PID from a Patient; for an Encounter without its Patient, from the subject reference alone.
  std::string pid(const Value* patient, const Value* subject_ref) const {
    std::vector<std::string> f(32);
    f[0] = "1";
    if (patient != nullptr) {
      std::string nhs, others, status;
      for (const Value* id : items(*patient, "identifier")) {
        const std::string_view system = str(*id, "system"), value = str(*id, "value");
        if (value.empty()) continue;
        if (system == kNhsNumberSystem) {
          if (nhs.empty()) nhs = components({value, "", "", "NHS", "NH"});
          if (status.empty()) status = verification_status(*id);
        } else {
          add_repetition(others, components({value, "", "", assigner(*id), identifier_type(*id)}));
        }
      }
      std::string pid3 = nhs;
      add_repetition(pid3, others);
      if (pid3.empty() && !str(*patient, "id").empty()) {
        pid3 = components({str(*patient, "id"), "", "", to_.sending_application, "PI"});
      }
      f[2] = pid3;
      for (const Value* name : items(*patient, "name")) add_repetition(f[4], xpn(*name));
      f[6] = hl7_datetime(str(*patient, "birthDate"));
      f[7] = escape(gender(str(*patient, "gender")));
      for (const Value* a : items(*patient, "address")) add_repetition(f[10], xad(*a));
      for (const Value* t : items(*patient, "telecom")) {
        add_repetition(str(*t, "use") == "work" ? f[13] : f[12], xtn(*t));
      }
      if (const Value* marital = member(*patient, "maritalStatus")) {
        for (const Value* c : items(*marital, "coding")) {
          const std::string_view code = str(*c, "code");
          if (!code.empty() && code.size() <= 2) {
            f[15] = escape(code);
            break;
          }
        }
      }
      if (const Value* d = member(*patient, "deceasedDateTime"); d != nullptr && d->IsString()) {
        f[28] = hl7_datetime(str(d));
        f[29] = "Y";
      } else if (const Value* b = member(*patient, "deceasedBoolean"); b != nullptr && b->IsBool()) {
        f[29] = b->GetBool() ? "Y" : "N";
      }
      f[31] = status.empty() ? std::string() : escape("NSTS" + status);
    } else if (subject_ref != nullptr) {
      // Only the reference: its identifier, else the id it names.
      if (const Value* id = member(*subject_ref, "identifier")) {
        const bool nhs = str(*id, "system") == kNhsNumberSystem;
        f[2] = components({str(*id, "value"), "", "", nhs ? "NHS" : assigner(*id), nhs ? "NH" : identifier_type(*id)});
      }
      const std::string_view ref = str(*subject_ref, "reference");
      if (f[2].empty() && !ref.empty()) {
        f[2] = components({ref.substr(ref.rfind('/') + 1), "", "", to_.sending_application, "PI"});
      }
    }
    return segment("PID", std::move(f));
  }

  // PD1-3 the registered GP practice (ODS code in XON.3), PD1-4 the GP (national code in XCN.1).
  std::string pd1(const Value& patient, const Context& ctx) const {
    std::string practice, gp;
    for (const Value* ref : items(patient, "generalPractitioner")) {
      std::string_view type = str(*ref, "type");
      const Value* identifier = member(*ref, "identifier");
      std::string_view display = str(*ref, "display");
      if (const Value* target = ctx.resolve(*ref)) {
        type = str(*target, "resourceType");
        if (identifier == nullptr) {
          for (const Value* id : items(*target, "identifier")) {
            if (is_gp_or_practice_system(str(*id, "system"))) {
              identifier = id;
              break;
            }
          }
        }
        if (display.empty()) display = str(*target, "name");  // Organization.name
      }
      if (identifier == nullptr) continue;
      const std::string_view system = str(*identifier, "system"), value = str(*identifier, "value");
      if (value.empty()) continue;
      const std::string_view ref_text = str(*ref, "reference");
      const bool organization = system == kOdsSystem || type == "Organization" ||
                                ref_text.substr(0, 13) == "Organization/";
      if (organization && practice.empty()) {
        practice = components({display, "", value});
      } else if (!organization && gp.empty()) {
        gp = components({value});
      }
    }
    if (practice.empty() && gp.empty()) return {};
    return segment("PD1", {"", "", practice, gp});
  }

  std::string pv1(const Value* encounter) const {
    if (encounter == nullptr) return segment("PV1", {"1", "N"});  // ADT_A05 needs a PV1: "not applicable"
    std::vector<std::string> f(45);
    f[0] = "1";
    std::string_view cls;
    if (const Value* c = member(*encounter, "class")) cls = str(*c, "code");
    const std::string_view mapped = tables_.lookup("encounter-class", cls);
    f[1] = escape(mapped.empty() ? std::string_view("U") : mapped);
    for (const Value* p : items(*encounter, "participant")) {
      const Value* individual = member(*p, "individual");
      const Value* id = individual == nullptr ? nullptr : member(*individual, "identifier");
      if (id == nullptr || str(*id, "value").empty()) continue;
      f[6] = components({str(*id, "value"), "", "", "", "", "", "", "",
                         is_gmc(str(*id, "system")) ? std::string_view("GMC") : std::string_view()});
      break;  // PV1-7 attending doctor: the first clinician named by an identifier
    }
    for (const Value* id : items(*encounter, "identifier")) {
      if (!str(*id, "value").empty()) {
        f[18] = components({str(*id, "value"), "", "", assigner(*id), "VN"});
        break;
      }
    }
    if (const Value* period = member(*encounter, "period")) {
      f[43] = hl7_datetime(str(*period, "start"));
      f[44] = hl7_datetime(str(*period, "end"));
    }
    return segment("PV1", std::move(f));
  }

 private:
  static std::string segment_fields(std::initializer_list<std::string> fields) {
    std::vector<std::string> v(fields);
    while (!v.empty() && v.back().empty()) v.pop_back();
    std::string out;
    bool first = true;
    for (const std::string& f : v) {
      if (!first) out += '|';
      out += f;
      first = false;
    }
    out += '\r';
    return out;
  }

  static bool is_gmc(std::string_view system) { return system.find("gmc-number") != std::string_view::npos; }
  static bool is_gp_or_practice_system(std::string_view system) {
    if (system == kOdsSystem) return true;
    for (std::string_view s : kGpSystems)
      if (system == s) return true;
    return false;
  }

  std::string_view gender(std::string_view fhir) const {
    const std::string_view v2 = tables_.lookup("gender", fhir);
    return v2.empty() && !fhir.empty() ? std::string_view("U") : v2;
  }

  // The UK Core verification status code ("01".."08") on an NHS number identifier.
  static std::string verification_status(const Value& identifier) {
    for (const Value* ext : items(identifier, "extension")) {
      if (str(*ext, "url") != kVerificationStatusUrl) continue;
      const Value* cc = member(*ext, "valueCodeableConcept");
      if (cc == nullptr) continue;
      for (const Value* c : items(*cc, "coding")) {
        const std::string_view code = str(*c, "code");
        if (code.size() == 2 && is_digit(code[0]) && is_digit(code[1])) return std::string(code);
      }
    }
    return {};
  }

  static std::string_view assigner(const Value& identifier) {
    const Value* a = member(identifier, "assigner");
    if (a == nullptr) return {};
    if (const Value* id = member(*a, "identifier"); id != nullptr && !str(*id, "value").empty()) {
      return str(*id, "value");
    }
    return str(*a, "display");
  }

  static std::string_view identifier_type(const Value& identifier) {
    const Value* type = member(identifier, "type");
    if (type == nullptr) return {};
    for (const Value* c : items(*type, "coding"))
      if (str(*c, "system") == "http://terminology.hl7.org/CodeSystem/v2-0203") return str(*c, "code");
    return {};
  }

  // XPN: family^given^further given names^suffix^prefix^^name type.
  std::string xpn(const Value& name) const {
    const auto given = items(name, "given");
    std::string further;
    for (std::size_t i = 1; i < given.size(); ++i) {
      if (!further.empty()) further += ' ';
      further += str(given[i]);
    }
    const auto joined = [&](std::string_view member_name) {
      std::string out;
      for (const Value* v : items(name, member_name)) {
        if (!out.empty()) out += ' ';
        out += str(v);
      }
      return out;
    };
    const std::string prefix = joined("prefix"), suffix = joined("suffix");
    std::string_view family = str(name, "family");
    if (family.empty() && given.empty()) family = str(name, "text");
    return components({family, given.empty() ? std::string_view() : str(given[0]), further, suffix, prefix, "",
                       tables_.lookup("name-use", str(name, "use"))});
  }

  // XAD: line 1^line 2^city (else line 3)^district (else line 4)^postcode^country^type.
  std::string xad(const Value& address) const {
    const auto lines = items(address, "line");
    const auto line = [&](std::size_t i) { return i < lines.size() ? str(lines[i]) : std::string_view(); };
    const std::string_view city = str(address, "city"), district = str(address, "district");
    return components({line(0), line(1), city.empty() ? line(2) : city, district.empty() ? line(3) : district,
                       str(address, "postalCode"), str(address, "country"),
                       tables_.lookup("address-use", str(address, "use"))});
  }

  // XTN (v2.4): number^use^equipment^email. An email goes in XTN.4, a number in XTN.1.
  std::string xtn(const Value& telecom) const {
    const std::string_view system = str(telecom, "system"), value = str(telecom, "value"), use = str(telecom, "use");
    if (value.empty()) return {};
    std::string_view equipment = tables_.lookup("telecom-system", system);
    if (use == "mobile" && system == "phone") equipment = "CP";
    const std::string_view use_code = system == "email" ? std::string_view("NET") : tables_.lookup("telecom-use", use);
    if (system == "email") return components({"", use_code, equipment, value});
    return components({value, use_code, equipment});
  }

  const Tables& tables_;
  const V2Addressing& to_;
};

Failure unsupported(std::string diagnostics, std::string location) {
  return Failure::permanent(Errc::unsupported, Issue{Severity::error, "not-supported", std::move(diagnostics),
                                                     std::move(location), "hl7v2-out-unsupported"});
}

class FhirToV2Impl final : public FhirToV2 {
 public:
  explicit FhirToV2Impl(const std::filesystem::path& dir) { tables_.load(dir / "out-codes.csv"); }

  Result<Rendered> render(std::string_view fhir_json, const V2Addressing& to, std::string_view control_id,
                          std::string_view timestamp) const override {
    auto doc = parse_json(fhir_json);
    if (!doc.has_value()) return doc.error();
    const Value& root = doc.value();
    if (!root.IsObject()) return unsupported("not a FHIR resource", "(body)");
    const std::string_view type = str(root, "resourceType");

    Context ctx;
    const Value* patient = nullptr;
    const Value* encounter = nullptr;
    if (type == "Patient") {
      patient = &root;
      ctx.resource = &root;
    } else if (type == "Encounter") {
      encounter = &root;
      ctx.resource = &root;
    } else if (type == "Bundle") {
      ctx.bundle = &root;
      const Value* focus = nullptr;
      std::string focus_location;
      const auto entries = items(root, "entry");
      // A message Bundle: MessageHeader.focus names the resource; else the first Patient/Encounter.
      for (const Value* e : entries) {
        const Value* r = member(*e, "resource");
        if (r == nullptr || str(*r, "resourceType") != "MessageHeader") continue;
        for (const Value* f : items(*r, "focus")) {
          focus = ctx.resolve(*f);
          if (focus != nullptr) break;
        }
        break;
      }
      if (focus == nullptr || (str(*focus, "resourceType") != "Patient" && str(*focus, "resourceType") != "Encounter")) {
        focus = nullptr;
        for (std::string_view wanted : {"Encounter", "Patient"}) {
          for (const Value* e : entries) {
            const Value* r = member(*e, "resource");
            if (r != nullptr && str(*r, "resourceType") == wanted) {
              focus = r;
              break;
            }
          }
          if (focus != nullptr) break;
        }
      }
      if (focus == nullptr) {
        return unsupported("the Bundle has no Patient or Encounter to send as an ADT message", "Bundle.entry");
      }
      if (str(*focus, "resourceType") == "Patient") {
        patient = focus;
      } else {
        encounter = focus;
      }
      ctx.resource = focus;
    } else {
      return unsupported("only Patient, Encounter and message Bundles are sent as HL7 v2 ADT", "resourceType");
    }

    const Value* subject = nullptr;
    if (encounter != nullptr) {
      subject = member(*encounter, "subject");
      if (subject != nullptr && patient == nullptr) {
        const Value* resolved = ctx.resolve(*subject);
        if (resolved != nullptr && str(*resolved, "resourceType") == "Patient") patient = resolved;
      }
    }

    std::string event, structure;
    std::string_view occurred;
    if (encounter == nullptr) {
      event = to.patient_as_a28 ? "A28" : "A31";
      structure = "ADT_A05";
    } else {
      const std::string_view status = str(*encounter, "status");
      const Value* period = member(*encounter, "period");
      if (status == "in-progress" || status == "arrived") {
        event = "A01";
        structure = "ADT_A01";
        if (period != nullptr) occurred = str(*period, "start");
      } else if (status == "finished") {
        event = "A03";
        structure = "ADT_A03";
        if (period != nullptr) occurred = str(*period, "end");
      } else {
        event = "A08";
        structure = "ADT_A01";
      }
    }

    const Renderer r(tables_, to);
    Context patient_ctx = ctx;
    if (patient != nullptr) patient_ctx.resource = patient;
    Rendered out;
    out.er7 = r.msh(event, structure, control_id, timestamp);
    out.er7 += r.evn(event, timestamp, occurred);
    out.er7 += r.pid(patient, subject);
    if (patient != nullptr) out.er7 += r.pd1(*patient, patient_ctx);
    out.er7 += r.pv1(encounter);
    out.control_id = std::string(control_id);
    out.event = "ADT^" + event;
    return out;
  }

 private:
  Tables tables_;
};

}  // namespace

std::unique_ptr<FhirToV2> FhirToV2::load(const std::filesystem::path& tables_dir) {
  return std::make_unique<FhirToV2Impl>(tables_dir);
}

}  // namespace tellonce::hl7v2
