#include "hl7v2/tables.hpp"

#include "tellonce/settings_reader.hpp"

namespace tellonce::hl7v2 {

std::filesystem::path default_tables_dir() { return std::filesystem::path(TELLONCE_HL7V2_TABLES); }

std::filesystem::path read_tables_setting(SettingsReader& section) {
  auto tables = section.file_path("tables", "");
  if (tables.empty()) return default_tables_dir();
  if (!std::filesystem::is_directory(tables))
    section.problem("tables", "'" + tables + "' is not a folder of HL7 v2 mapping tables");
  return tables;
}

}  // namespace tellonce::hl7v2
