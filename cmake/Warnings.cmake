# Warning flags for the project's own targets (third-party headers come in as SYSTEM).
set(DSFT_WARNINGS -Wall -Wextra -Wno-unused-parameter)
if(DSFT_WERROR)
  list(APPEND DSFT_WARNINGS -Werror)
endif()
if(DSFT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
