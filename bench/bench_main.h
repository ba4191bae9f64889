// What every program in bench/ shares at its edges: how it reads its flags,
// how it reports a failed sanity check, and what it exits with.
//
//   BenchFlags: --name=value (or --name value) flags, bare arguments where
//     a program takes them, and --quick, which every benchmark accepts: a
//     short run (well under a minute) that CI runs (docs/benchmarks.md,
//     "Quick runs in CI"). An unknown flag or a bad value prints the usage
//     and exits 2; --help prints it and exits 0.
//   Expect(): a sanity check on a result: a write that failed, a count that
//     does not match, a latency that is not positive, an event that never
//     came. A failure prints "<program>: sanity check failed: ..." to
//     stderr and makes ExitStatus() 1. These are checks that the numbers
//     mean something, never performance thresholds: figures are reported,
//     not compared.
//   Fatal(): a failure past which nothing can be measured; exits 1 at once.
//
// Standard library only, so that route_bench (no gRPC) can use it too.
//
// Thread safety: BenchFlags is used from main() before any thread starts.
// Expect(), Fatal() and ExitStatus() may be called from any thread.
#ifndef BUCKETMAP_BENCH_BENCH_MAIN_H_
#define BUCKETMAP_BENCH_BENCH_MAIN_H_

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bucketmap {

// The program's name (argv[0] without its directory), for messages; set
// by BenchFlags::Parse().
inline std::string& BenchName() {
  static std::string name = "bench";
  return name;
}

// vsnprintf() into a string of the size it needs.
inline std::string FormatV(const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return "";
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(out.data(), out.size(), format, args);
  out.resize(static_cast<size_t>(n));
  return out;
}

inline std::atomic<int>& SanityFailureCount() {
  static std::atomic<int> count{0};
  return count;
}

// Records a failed sanity check unless `ok`; returns `ok`. `format` is
// printf's, describing what was wrong.
__attribute__((format(printf, 2, 3))) inline bool Expect(bool ok, const char* format, ...) {
  if (ok) return true;
  va_list args;
  va_start(args, format);
  const std::string what = FormatV(format, args);
  va_end(args);
  std::fprintf(stderr, "%s: sanity check failed: %s\n", BenchName().c_str(), what.c_str());
  SanityFailureCount().fetch_add(1);
  return false;
}

// Prints "<program>: <message>" to stderr and exits 1 (which ends the
// servers started with SpawnServer(), see bench_util.h).
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void Fatal(const char* format, ...) {
  va_list args;
  va_start(args, format);
  const std::string what = FormatV(format, args);
  va_end(args);
  std::fprintf(stderr, "%s: %s\n", BenchName().c_str(), what.c_str());
  std::fflush(stdout);
  std::exit(1);
}

// What main() returns: 0 when every sanity check passed, otherwise 1, after
// a line saying how many failed.
inline int ExitStatus() {
  std::fflush(stdout);
  const int failed = SanityFailureCount().load();
  if (failed == 0) return 0;
  std::fprintf(stderr, "%s: %d sanity check(s) failed\n", BenchName().c_str(), failed);
  return 1;
}

// A benchmark's flags. Declare them, then Parse(); --quick is always
// declared. Flags are --name=value, or --name value for flags that take a
// value; a bool flag is --name, --name=true or --name=false.
class BenchFlags {
 public:
  // `quick_help` says what --quick shortens in this program.
  explicit BenchFlags(std::string quick_help) { Bool("quick", &quick_, std::move(quick_help)); }

  BenchFlags(const BenchFlags&) = delete;
  BenchFlags& operator=(const BenchFlags&) = delete;

  void Bool(std::string name, bool* value, std::string help) {
    flags_.push_back(Flag{std::move(name), Kind::kBool, value, nullptr, 0, std::move(help)});
  }
  // An integer of at least `min`.
  void Int(std::string name, int64_t* value, int64_t min, std::string help) {
    flags_.push_back(Flag{std::move(name), Kind::kInt, value, nullptr, min, std::move(help)});
  }
  void Int(std::string name, int* value, int min, std::string help) {
    flags_.push_back(Flag{std::move(name), Kind::kInt32, value, nullptr, min, std::move(help)});
  }
  // One of `choices`.
  void Choice(std::string name, std::string* value, std::vector<std::string> choices,
              std::string help) {
    Flag f{std::move(name), Kind::kChoice, value, nullptr, 0, std::move(help)};
    f.choices = std::move(choices);
    flags_.push_back(std::move(f));
  }
  // Comma-separated integers of at least `min`; replaces the default list.
  void IntList(std::string name, std::vector<int64_t>* value, int64_t min, std::string help) {
    flags_.push_back(Flag{std::move(name), Kind::kIntList, nullptr, value, min, std::move(help)});
  }
  // Bare arguments, integers of at least `min`, appended to `value`
  // (which the program leaves empty to detect their absence). Without
  // this, a bare argument is an error.
  void Positional(std::string name, std::vector<int64_t>* value, int64_t min, std::string help) {
    positional_ = Flag{std::move(name), Kind::kIntList, nullptr, value, min, std::move(help)};
    has_positional_ = true;
  }

  // Parses argv[1..]. Exits 0 after printing the usage for --help, and 2
  // after printing the problem and the usage for anything it does not take.
  void Parse(int argc, char** argv) {
    if (argc > 0) {
      const std::string path = argv[0];
      BenchName() = path.substr(path.rfind('/') + 1);
    }
    bool positional_seen = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        PrintUsage(stdout);
        std::exit(0);
      }
      if (arg.compare(0, 2, "--") != 0) {
        if (!has_positional_) Fail("unexpected argument " + arg);
        if (!positional_seen) positional_.list->clear();
        positional_seen = true;
        if (!SetList(positional_, arg)) Fail("bad " + positional_.name + ": " + arg);
        continue;
      }
      const size_t eq = arg.find('=');
      const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      Flag* flag = Find(name);
      if (flag == nullptr) Fail("unknown flag " + arg);
      std::string value;
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
      } else if (flag->kind == Kind::kBool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        Fail("--" + name + " needs a value");
      }
      if (!Set(*flag, value)) Fail("bad value for --" + name + ": " + value);
    }
  }

  bool quick() const { return quick_; }

 private:
  enum class Kind { kBool, kInt, kInt32, kIntList, kChoice };
  struct Flag {
    std::string name;
    Kind kind;
    void* value;
    std::vector<int64_t>* list;
    int64_t min;
    std::string help;
    std::vector<std::string> choices = {};
  };

  Flag* Find(const std::string& name) {
    for (Flag& f : flags_) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }

  static bool ParseInt(const std::string& text, int64_t min, int64_t* out) {
    if (text.empty()) return false;
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || v < min) return false;
    *out = v;
    return true;
  }

  static bool SetList(const Flag& f, const std::string& text) {
    size_t start = 0;
    for (;;) {
      const size_t comma = text.find(',', start);
      int64_t v = 0;
      if (!ParseInt(text.substr(start, comma - start), f.min, &v)) return false;
      f.list->push_back(v);
      if (comma == std::string::npos) return true;
      start = comma + 1;
    }
  }

  static bool Set(const Flag& f, const std::string& text) {
    int64_t v = 0;
    switch (f.kind) {
      case Kind::kBool:
        if (text != "true" && text != "false") return false;
        *static_cast<bool*>(f.value) = text == "true";
        return true;
      case Kind::kInt:
        if (!ParseInt(text, f.min, &v)) return false;
        *static_cast<int64_t*>(f.value) = v;
        return true;
      case Kind::kInt32:
        if (!ParseInt(text, f.min, &v) || v > INT32_MAX) return false;
        *static_cast<int*>(f.value) = static_cast<int>(v);
        return true;
      case Kind::kIntList:
        f.list->clear();
        return SetList(f, text);
      case Kind::kChoice:
        for (const std::string& c : f.choices) {
          if (c == text) {
            *static_cast<std::string*>(f.value) = text;
            return true;
          }
        }
        return false;
    }
    return false;
  }

  static std::string Syntax(const Flag& f) {
    switch (f.kind) {
      case Kind::kBool:
        return "--" + f.name;
      case Kind::kInt:
      case Kind::kInt32:
        return "--" + f.name + "=N";
      case Kind::kIntList:
        return "--" + f.name + "=N,...";
      case Kind::kChoice: {
        std::string out = "--" + f.name + "=";
        for (size_t i = 0; i < f.choices.size(); ++i) out += (i > 0 ? "|" : "") + f.choices[i];
        return out;
      }
    }
    return "";
  }

  void PrintUsage(std::FILE* out) const {
    std::string line = "usage: " + BenchName();
    for (const Flag& f : flags_) line += " [" + Syntax(f) + "]";
    if (has_positional_) line += " [" + positional_.name + " ...]";
    std::fprintf(out, "%s\n", line.c_str());
    for (const Flag& f : flags_) {
      std::fprintf(out, "  %-22s %s\n", Syntax(f).c_str(), f.help.c_str());
    }
    if (has_positional_) {
      std::fprintf(out, "  %-22s %s\n", positional_.name.c_str(), positional_.help.c_str());
    }
  }

  [[noreturn]] void Fail(const std::string& problem) const {
    std::fprintf(stderr, "%s: %s\n", BenchName().c_str(), problem.c_str());
    PrintUsage(stderr);
    std::exit(2);
  }

  bool quick_ = false;
  std::vector<Flag> flags_;
  Flag positional_{};
  bool has_positional_ = false;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_BENCH_BENCH_MAIN_H_
