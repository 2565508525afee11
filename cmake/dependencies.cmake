# Finds dtrn's external dependencies. Everything here comes from Debian packages (deploy/install_deps.sh)
# or the CUDA toolkit; optional parts are switched on where found (AUTO) so that a machine without them
# still builds the runtime and the trainer.

find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PkgConfig REQUIRED)

# OpenBLAS: the CPU matmul. Prefer Debian's OpenMP build: it shares libgomp's thread pool with dtrn's own
# kernels, where the pthread build's workers and OpenMP's would spin against each other for the cores.
# Linking the full path of that variant puts its folder in the RUNPATH, ahead of the system alternative.
find_path(CBLAS_INCLUDE_DIR cblas.h
          PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread
                /usr/include/openblas /usr/include REQUIRED NO_DEFAULT_PATH)
find_library(OPENBLAS_LIBRARY NAMES openblas
             PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp NO_DEFAULT_PATH)
if(NOT OPENBLAS_LIBRARY)
  find_library(OPENBLAS_LIBRARY NAMES openblas REQUIRED)
endif()
message(STATUS "dtrn: OpenBLAS ${OPENBLAS_LIBRARY}")

find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)

# CUDA: AUTO builds the backend where nvcc is found, on PATH or in /usr/local/cuda.
set(DTRN_HAVE_CUDA OFF)
if(NOT DTRN_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(DTRN_NVCC nvcc HINTS /usr/local/cuda/bin)
    if(DTRN_NVCC)
      set(CMAKE_CUDA_COMPILER ${DTRN_NVCC})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    # The .cu files are C++17: CMake 3.25 knows no nvcc flag for CUDA20, which CXX_STANDARD 20 would imply.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(DTRN_HAVE_CUDA ON)
  elseif(DTRN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "DTRN_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()

# The coordinator (gRPC service, agent, worker client, Prometheus exposition, dashboard): AUTO builds it
# where gRPC, protobuf and cpp-httplib are found. Without them (the GPU machine has protobuf but no
# gRPC) dtrn builds as before, minus the coordinator/, agent/, submit/, launch/ and top subcommands and
# their tests.
set(DTRN_HAVE_COORDINATOR OFF)
if(NOT DTRN_COORDINATOR STREQUAL "OFF")
  pkg_check_modules(GRPCPP IMPORTED_TARGET grpc++)
  pkg_check_modules(PROTOBUF IMPORTED_TARGET protobuf)
  pkg_check_modules(HTTPLIB IMPORTED_TARGET cpp-httplib)
  find_program(DTRN_PROTOC protoc)
  find_program(DTRN_GRPC_CPP_PLUGIN grpc_cpp_plugin)
  set(dtrn_coordinator_missing "")
  foreach(part GRPCPP_FOUND PROTOBUF_FOUND HTTPLIB_FOUND DTRN_PROTOC DTRN_GRPC_CPP_PLUGIN)
    if(NOT ${part})
      list(APPEND dtrn_coordinator_missing ${part})
    endif()
  endforeach()
  if(dtrn_coordinator_missing)
    set(dtrn_coordinator_why "missing ${dtrn_coordinator_missing} (Debian: libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libcpp-httplib-dev)")
    if(DTRN_COORDINATOR STREQUAL "ON")
      message(FATAL_ERROR "DTRN_COORDINATOR=ON but ${dtrn_coordinator_why}")
    endif()
    message(STATUS "dtrn: coordinator skipped: ${dtrn_coordinator_why}")
  else()
    set(DTRN_HAVE_COORDINATOR ON)
  endif()
endif()

# MPI (Open MPI): the CPU ranks' collectives and the bootstrap under mpirun and srun. AUTO: where found;
# without it dtrn trains in one process (and on GPUs launched with RANK/WORLD_SIZE env vars).
set(DTRN_MPI AUTO CACHE STRING "Build the MPI communicator: AUTO (when found), ON or OFF")
set_property(CACHE DTRN_MPI PROPERTY STRINGS AUTO ON OFF)
set(DTRN_HAVE_MPI OFF)
if(NOT DTRN_MPI STREQUAL "OFF")
  if(DTRN_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS CXX)
  else()
    find_package(MPI COMPONENTS CXX QUIET)
  endif()
  if(MPI_CXX_FOUND)
    set(DTRN_HAVE_MPI ON)
    find_program(DTRN_MPIEXEC NAMES mpirun mpiexec)
  endif()
endif()

# NCCL: the GPU ranks' collectives, with the CUDA backend only. The CUDA toolkit may carry it
# (/usr/local/cuda) or the system (Debian/Ubuntu libnccl-dev; the GPU machine has only libnccl.so.2).
set(DTRN_HAVE_NCCL OFF)
if(DTRN_HAVE_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include /usr/include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
               HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DTRN_HAVE_NCCL ON)
  else()
    message(STATUS "dtrn: NCCL not found: GPU ranks cannot communicate (one GPU still trains)")
  endif()
endif()
