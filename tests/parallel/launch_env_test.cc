// Reading the launcher's environment: precedence mpirun > srun > RANK/WORLD_SIZE, and one clear error per
// malformed variable.
#include <gtest/gtest.h>

#include <map>

#include "dtrn/parallel/launch_env.h"

namespace dtrn::parallel {
namespace {

StatusOr<LaunchEnv> read(const std::map<std::string, std::string>& vars) {
  return read_launch_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(LaunchEnv, NothingSetIsOneProcess) {
  auto e = read({});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->launcher, Launcher::kNone);
  EXPECT_EQ(e->world_size, 1);
  EXPECT_EQ(e->rank, 0);
}

TEST(LaunchEnv, MpirunWinsOverSlurmAndTorchrunVariables) {
  auto e = read({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                 {"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"RANK", "5"}, {"WORLD_SIZE", "6"}});
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->launcher, Launcher::kMpirun);
  EXPECT_EQ(e->rank, 3);
  EXPECT_EQ(e->world_size, 4);
  EXPECT_EQ(e->local_rank, 1);
}

TEST(LaunchEnv, SrunStepVariablesAndNotTheBatchScriptsAlone) {
  // sbatch sets SLURM_PROCID for its one batch process but not SLURM_STEP_NUM_TASKS: that is no job.
  auto batch = read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->launcher, Launcher::kNone);
  auto e = read({{"SLURM_PROCID", "6"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "2"}});
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->launcher, Launcher::kSrun);
  EXPECT_EQ(e->rank, 6);
  EXPECT_EQ(e->local_rank, 2);
}

TEST(LaunchEnv, TorchrunStyleNeedsTheMasterAddress) {
  auto e = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"},
                 {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->launcher, Launcher::kEnv);
  EXPECT_EQ(e->master_addr, "node7");
  EXPECT_EQ(e->master_port, 29500);
  auto missing = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("MASTER_ADDR"), std::string::npos);
}

TEST(LaunchEnv, MalformedValuesAreNamed) {
  auto bad = read({{"RANK", "one"}, {"WORLD_SIZE", "2"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("RANK: 'one'"), std::string::npos) << bad.status().message();
  auto outside = read({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("OMPI_COMM_WORLD_RANK=4"), std::string::npos);
  auto orphan = read({{"RANK", "0"}});
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(orphan.status().message().find("WORLD_SIZE"), std::string::npos);
}

}  // namespace
}  // namespace dtrn::parallel
