// `tellonce convert --from hl7v2 [--schemas DIR] FILE|-`: an HL7 v2 message to the FHIR Bundle the
// broker would build for it, validated, without a running broker.
#pragma once

#include <filesystem>

namespace tellonce {

// argv holds the arguments after `convert`. Prints the indented Bundle and then the validation
// OperationOutcome (or, for a refused message, only the OperationOutcome) on stdout.
// Exit status: 0 converted and valid, 1 refused or invalid, 2 usage error (bad option, no input,
// unreadable file, schemas or mapping tables).
int run_convert_command(int argc, char** argv, const std::filesystem::path& default_schema_dir);

}  // namespace tellonce
