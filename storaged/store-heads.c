/* store-heads.c: being written */
