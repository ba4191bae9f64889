#include "domain/validation.h"
