// RETURN_IF_ERROR and ASSIGN_OR_RETURN, which abseil 20220623 lacks.
#ifndef BUCKETMAP_DOMAIN_STATUS_MACROS_H_
#define BUCKETMAP_DOMAIN_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BUCKETMAP_CONCAT_INNER_(a, b) a##b
#define BUCKETMAP_CONCAT_(a, b) BUCKETMAP_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    if (::absl::Status status_ = (expr); !status_.ok()) { \
      return status_;                                \
    }                                                \
  } while (0)

// Evaluates `rexpr` (a StatusOr); returns its status on error, otherwise
// moves the value into `lhs`, which may be a declaration.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(BUCKETMAP_CONCAT_(statusor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                           \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // BUCKETMAP_DOMAIN_STATUS_MACROS_H_
