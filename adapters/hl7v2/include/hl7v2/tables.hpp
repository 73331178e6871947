// Where the HL7 v2 mapping tables are read from: schemas/hl7v2/*.csv (the same folder holds the
// v2 -> FHIR tables and the FHIR -> v2 out-*.csv ones). Start-up only; no threads involved.
#pragma once

#include <filesystem>

namespace tellonce {
class SettingsReader;
}

namespace tellonce::hl7v2 {

// The tables shipped with this build (TELLONCE_SCHEMA_DIR/hl7v2).
std::filesystem::path default_tables_dir();

// An adapter's optional `tables:` setting: a folder, relative to the config file, else the
// shipped tables. A folder that does not exist is reported at `tables`.
std::filesystem::path read_tables_setting(SettingsReader& section);

}  // namespace tellonce::hl7v2
